"""Evaluation stage: per-class IoU of a fitted extractor on the cached evaluation split."""

from __future__ import annotations

import pandas as pd

from lineargan.device import resolve_device
from lineargan.errors import FingerprintMismatchError
from lineargan.evaluate import evaluate_subsets
from lineargan.metrics import IoUResult
from storage.checkpoints import load_extractor
from storage.feature_store import StoreSpec
from storage.tables import read_table_part, run_metadata, write_table_part
from storage.target import Target
from tasks.feature_source import FeatureSource
from tasks.process import tune_process

IOU_TABLE = "iou_per_class"
# The same rows on the images where the segmenter's detector fired (the store's ``detected``
# flag): the embedded segmenter labels the others from a fallback box.
IOU_DETECTED_TABLE = "iou_per_class_detected"


def evaluate_fit(
    fit_meta: dict,
    eval_url: str,
    results_root: str,
    profile: str,
    run_id: str,
    device: str = "auto",
) -> dict[str, pd.DataFrame]:
    """Per-class IoU rows of one fit on one evaluation store, on all images ("all") and on the
    images the segmenter's detector labelled ("detected"); both parts are written, and reused
    when already there."""
    tune_process()
    store = FeatureSource.open(Target(eval_url), require_complete=True)
    spec = store.spec
    if list(spec.class_names) != list(fit_meta["class_names"]):
        raise FingerprintMismatchError(
            f"evaluation store classes {list(spec.class_names)} differ from the fit's {fit_meta['class_names']}",
            "evaluate on a store made with the same segmenter as the training store",
        )
    key = f"{fit_meta['fit_key'][:16]}-{spec.digest()[:16]}"
    existing = {
        "all": read_table_part(results_root, IOU_TABLE, key),
        "detected": read_table_part(results_root, IOU_DETECTED_TABLE, key),
    }
    if all(df is not None for df in existing.values()):
        return existing  # type: ignore[return-value]
    dev = resolve_device(device)
    model, _ = load_extractor(fit_meta["fit_dir"], dev)
    chunks = ((c.features, c.labels, c.detected) for _, c in store.iter_chunks())
    (result,) = evaluate_subsets([model], chunks, spec.class_names, spec.resolution, dev)
    frames = {
        subset: iou_rows(spec, fit_meta, result[subset], n, profile, run_id)
        for subset, n in (("detected", store.n_detected()), ("all", spec.n))
    }
    tables = {"detected": IOU_DETECTED_TABLE, "all": IOU_TABLE}
    for subset, df in frames.items():  # the "all" part last: it marks the evaluation done
        write_table_part(results_root, tables[subset], key, df)
    return frames


def iou_rows(
    spec: StoreSpec,
    fit_meta: dict,
    result: IoUResult,
    n_eval: int,
    profile: str,
    run_id: str,
) -> pd.DataFrame:
    """Per-class IoU rows of one fit (background left out: Appx A ignores it)."""
    df = pd.DataFrame(
        {
            "generator": spec.generator,
            "segmenter": spec.segmenter,
            "extractor": fit_meta["extractor"],
            "method": fit_meta.get("method", "schedule"),
            "fit_key": fit_meta["fit_key"],
            "eval_digest": spec.digest(),
            "class_index": range(len(spec.class_names)),
            "class_name": list(spec.class_names),
            "iou": result.iou,
            "images": result.images,
            "n_eval": n_eval,
            **run_metadata(profile, run_id),
        }
    )
    return df[df.class_index != 0].reset_index(drop=True)

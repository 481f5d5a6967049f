"""Evaluation stage: per-class IoU of a fitted extractor on the cached evaluation split."""

from __future__ import annotations

import pandas as pd

from lineargan.device import resolve_device
from lineargan.errors import FingerprintMismatchError
from lineargan.evaluate import evaluate
from storage.checkpoints import load_extractor
from storage.feature_store import FeatureStore
from storage.tables import read_table_part, run_metadata, write_table_part
from storage.target import Target
from tasks.models import limit_torch_threads

IOU_TABLE = "iou_per_class"


def evaluate_fit(
    fit_meta: dict,
    eval_url: str,
    results_root: str,
    profile: str,
    run_id: str,
    device: str = "auto",
) -> pd.DataFrame:
    """Per-class IoU rows of one fit on one evaluation store; reused when already written."""
    limit_torch_threads()
    store = FeatureStore.open(Target(eval_url), require_complete=True)
    spec = store.spec
    if list(spec.class_names) != list(fit_meta["class_names"]):
        raise FingerprintMismatchError(
            f"evaluation store classes {list(spec.class_names)} differ from the fit's {fit_meta['class_names']}",
            "evaluate on a store made with the same segmenter as the training store",
        )
    key = f"{fit_meta['fit_key'][:16]}-{spec.digest()[:16]}"
    existing = read_table_part(results_root, IOU_TABLE, key)
    if existing is not None:
        return existing
    dev = resolve_device(device)
    model, _ = load_extractor(fit_meta["fit_dir"], dev)
    chunks = ((c.features, c.labels) for _, c in store.iter_chunks())
    result = evaluate(model, chunks, spec.class_names, spec.resolution, dev)
    df = pd.DataFrame(
        {
            "generator": spec.generator,
            "segmenter": spec.segmenter,
            "extractor": fit_meta["extractor"],
            "fit_key": fit_meta["fit_key"],
            "eval_digest": spec.digest(),
            "class_index": range(len(spec.class_names)),
            "class_name": list(spec.class_names),
            "iou": result.iou,
            "images": result.images,
            "n_eval": spec.n,
            **run_metadata(profile, run_id),
        }
    )
    df = df[df.class_index != 0].reset_index(drop=True)  # background is ignored (Appx A)
    write_table_part(results_root, IOU_TABLE, key, df)
    return df

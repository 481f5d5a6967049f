"""Table 1 (and Table 6): Parquet rows from the fits' evaluations, rendered like every paper
table; and the Fig 3 style comparison PNG."""

from __future__ import annotations

import hashlib

import pandas as pd
import pyarrow as pa

from lineargan.device import resolve_device
from lineargan.evaluate import predict
from lineargan.figures import comparison_grid
from lineargan.render import miou_from_rows, row_label, table1_summary
from storage.checkpoints import load_extractor
from storage.feature_store import FeatureStore
from storage.layout import table_dir, write_figure
from storage.tables import MODELS, read_table_part, run_metadata, schema, write_table_part
from storage.target import Target
from tasks.analyses.contract import AnalysisResult
from tasks.analyses.report import TABLE1, render_experiment
from tasks.evaluate import IOU_DETECTED_TABLE, IOU_TABLE
from tasks.feature_source import FeatureSource

TABLE1_SCHEMA = schema(
    **MODELS,
    extractor=pa.string(),
    method=pa.string(),
    fit_key=pa.string(),
    miou=pa.float64(),
    rel_diff=pa.float64(),
    miou_detected=pa.float64(),
    n_eval_detected=pa.int64(),
    eval_digest=pa.string(),
    n_train=pa.int64(),
    n_eval=pa.int64(),
    iterations=pa.int64(),
    train_seconds=pa.float64(),
    final_loss=pa.float64(),
    converged=pa.bool_(),
    grad_norm=pa.float64(),
    fallback_rate_train=pa.float64(),
    fallback_rate_eval=pa.float64(),
)


def _run_key(fit_metas: list[dict], eval_url: str) -> str:
    blob = "|".join(sorted(m["fit_key"] for m in fit_metas)) + "|" + eval_url
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def write_table1(
    results_root: str,
    fit_metas: list[dict],
    iou_frames: list[pd.DataFrame],
    train_url: str,
    eval_url: str,
    profile: str,
    run_id: str,
) -> tuple[pd.DataFrame, AnalysisResult]:
    """Summarise per-class IoU into Table 1 rows, write them, render Tables 1 and 6."""
    iou = pd.concat(iou_frames, ignore_index=True)
    summary = table1_summary(iou)
    train = FeatureStore.open(Target(train_url)).group.attrs.asdict()
    evals = FeatureStore.open(Target(eval_url))
    eval_attrs = evals.group.attrs.asdict()
    by_key = {m["fit_key"]: m for m in fit_metas}
    summary["eval_digest"] = evals.spec.digest()
    detected = {
        k: read_table_part(results_root, IOU_DETECTED_TABLE, f"{k[:16]}-{evals.spec.digest()[:16]}")
        for k in summary["fit_key"]
    }
    summary["miou_detected"] = summary["fit_key"].map(
        lambda k: miou_from_rows(detected[k]) if detected[k] is not None else float("nan")
    )
    summary["n_eval_detected"] = evals.n_detected()
    summary["n_train"] = train["fingerprint"]["n"]
    summary["n_eval"] = evals.spec.n
    for col in ("iterations", "train_seconds", "final_loss"):
        summary[col] = summary["fit_key"].map(lambda k, c=col: by_key[k][c])
    # the stopping certificate of converged fits (a scheduled fit has none: null)
    summary["converged"] = summary["fit_key"].map(lambda k: by_key[k].get("converged"))
    summary["grad_norm"] = summary["fit_key"].map(lambda k: by_key[k].get("grad_norm"))
    summary["fallback_rate_train"] = train.get("fallback_rate")
    summary["fallback_rate_eval"] = eval_attrs.get("fallback_rate")
    for col, val in run_metadata(profile, run_id).items():
        summary[col] = val
    key = _run_key(fit_metas, eval_url)
    part = write_table_part(results_root, TABLE1, key, summary, TABLE1_SCHEMA)
    result = AnalysisResult(
        name=TABLE1,
        key=key,
        tables={
            TABLE1: part,
            IOU_TABLE: table_dir(results_root, IOU_TABLE).url,
            IOU_DETECTED_TABLE: table_dir(results_root, IOU_DETECTED_TABLE).url,
        },
        fits=[m["fit_dir"] for m in fit_metas],
    )
    return summary, render_experiment(result, results_root, profile, run_id)


def render_figure3(
    results_root: str,
    eval_url: str,
    fit_metas: list[dict],
    n_samples: int,
    name: str,
    device: str = "auto",
) -> list[str]:
    """Image, segmenter label and each extractor's prediction for the first evaluation samples."""
    store = FeatureSource.open(Target(eval_url), require_complete=True)
    spec = store.spec
    chunk = store.read_chunk(0, features=True, images=True)
    k = min(n_samples, len(chunk.labels))
    feats = [f[:k] for f in chunk.features]
    dev = resolve_device(device)
    rows = {"segmenter": chunk.labels[:k]}
    for meta in fit_metas:
        model, _ = load_extractor(meta["fit_dir"], dev)
        label = row_label(meta["extractor"], meta.get("method", "schedule"))
        rows[label] = predict(model, feats, spec.resolution, dev)
    image = comparison_grid(chunk.images[:k], rows, spec.class_names)
    return write_figure(results_root, name, image)

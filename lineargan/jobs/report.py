"""Report stage: Table 1 as Parquet + markdown, and the Fig 3 style comparison PNG."""

from __future__ import annotations

import hashlib

import pandas as pd

from lineargan.device import resolve_device
from lineargan.evaluate import predict
from lineargan.extractors import load_extractor
from lineargan.figures import comparison_grid
from lineargan.jobs.analysis import AnalysisResult
from lineargan.jobs.evaluate import IOU_TABLE
from lineargan.render import per_class_markdown, table1_markdown, table1_summary
from storage.feature_store import FeatureStore
from storage.layout import report_target, table_dir, write_figure
from storage.tables import run_metadata, write_table_part
from storage.target import Target

TABLE1 = "table1"


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
    """Summarise per-class IoU into Table 1 rows; write them and the markdown report."""
    iou = pd.concat(iou_frames, ignore_index=True)
    summary = table1_summary(iou)
    train = FeatureStore.open(Target(train_url)).group.attrs.asdict()
    evals = FeatureStore.open(Target(eval_url)).group.attrs.asdict()
    by_key = {m["fit_key"]: m for m in fit_metas}
    summary["n_train"] = train["fingerprint"]["n"]
    summary["n_eval"] = evals["fingerprint"]["n"]
    summary["iterations"] = summary["fit_key"].map(lambda k: by_key[k]["iterations"])
    summary["train_seconds"] = summary["fit_key"].map(lambda k: by_key[k]["train_seconds"])
    summary["fallback_rate_train"] = train.get("fallback_rate")
    summary["fallback_rate_eval"] = evals.get("fallback_rate")
    for col, val in run_metadata(profile, run_id).items():
        summary[col] = val
    key = _run_key(fit_metas, eval_url)
    part = write_table_part(results_root, TABLE1, key, summary)
    markdown = (
        f"## Table 1 — mIoU (%) of LSE, NSE-1, NSE-2 (profile `{profile}`, run `{run_id}`)\n\n"
        + table1_markdown(summary)
        + "\n\nBest in bold; brackets: difference relative to the best (Appx D).\n\n"
        + "### Per-class IoU (%)\n\n"
        + per_class_markdown(iou)
        + f"\n\nTraining images: {summary['n_train'].iloc[0]}, evaluation images: "
        f"{summary['n_eval'].iloc[0]}; segmenter fallback rate (train/eval): "
        f"{_pct(train.get('fallback_rate'))} / {_pct(evals.get('fallback_rate'))}.\n"
    )
    report = report_target(results_root, f"table1-{profile}")
    report.write_bytes_atomic(markdown.encode())
    result = AnalysisResult(
        name="table1",
        key=key,
        tables={TABLE1: part, IOU_TABLE: table_dir(results_root, IOU_TABLE).url},
        markdown=markdown,
    )
    return summary, result


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render_figure3(
    results_root: str,
    eval_url: str,
    fit_metas: list[dict],
    n_samples: int,
    name: str,
    device: str = "auto",
) -> str:
    """Image, segmenter label and each extractor's prediction for the first evaluation samples."""
    store = FeatureStore.open(Target(eval_url), require_complete=True)
    spec = store.spec
    chunk = store.read_chunk(0, features=True, images=True)
    k = min(n_samples, len(chunk.labels))
    feats = [f[:k] for f in chunk.features]
    dev = resolve_device(device)
    rows = {"segmenter": chunk.labels[:k]}
    for meta in fit_metas:
        model, _ = load_extractor(meta["fit_dir"], dev)
        rows[meta["extractor"]] = predict(model, feats, spec.resolution, dev)
    image = comparison_grid(chunk.images[:k], rows, spec.class_names)
    return write_figure(results_root, name, image)

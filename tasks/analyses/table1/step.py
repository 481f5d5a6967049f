"""Table 1 (and Table 6): the fits' evaluations summarised per extractor and fit method, and
the Fig 3 comparison of their predictions.

The fits and their evaluations are the run's shared fan-out (``Needs.fits``): every analysis
that reuses an extractor reuses these. Table 1 reads the evaluations' per-class rows (written
by :func:`tasks.evaluate.evaluate_fit`, which returns them again here without recomputing)
and adds what the summary shows beside the mIoU: the detected-only mIoU, the stopping
certificates of converged fits, the sizes and the segmenter's fallback rates.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
from PIL.Image import Image

from lineargan.device import resolve_device
from lineargan.evaluate import predict
from lineargan.figures import comparison_grid
from lineargan.render import miou_from_rows, row_label
from storage.checkpoints import load_extractor
from storage.feature_store import FeatureStore
from storage.tables import MODELS, schema
from tasks.analyses.contract import Inputs, Output
from tasks.analyses.table1.science import Table1Params, table1_summary
from tasks.evaluate import IOU_DETECTED_TABLE, IOU_TABLE, evaluate_fit
from tasks.run_context import RunContext

TABLE = "table1"
TABLES = {
    TABLE: schema(
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
}
# The evaluations' tables, shared by every run: Table 6 renders this run's rows of the first.
READS = (IOU_TABLE, IOU_DETECTED_TABLE)


def compute(ctx: RunContext, params: Table1Params, inputs: Inputs) -> Output:
    """Table 1's rows and Fig 3 from the run's fits (``inputs.fits``, by label)."""
    metas = [inputs.fits[label] for label in params.fits]
    evaluations = [
        evaluate_fit(m, ctx.eval_url, ctx.results_root, ctx.profile, ctx.run_id, ctx.device)
        for m in metas
    ]
    evals = inputs.evals
    summary = table1_summary(pd.concat([e["all"] for e in evaluations], ignore_index=True))
    by_key = {m["fit_key"]: m for m in metas}
    detected = {
        m["fit_key"]: miou_from_rows(e["detected"]) for m, e in zip(metas, evaluations, strict=True)
    }
    summary["eval_digest"] = evals.spec.digest()
    summary["miou_detected"] = summary["fit_key"].map(detected)
    summary["n_eval_detected"] = evals.n_detected()
    summary["n_train"] = inputs.train.spec.n
    summary["n_eval"] = evals.spec.n
    for col in ("iterations", "train_seconds", "final_loss"):
        summary[col] = summary["fit_key"].map(lambda k, c=col: by_key[k][c])
    # the stopping certificate of converged fits (a scheduled fit has none: null)
    summary["converged"] = summary["fit_key"].map(lambda k: by_key[k].get("converged"))
    summary["grad_norm"] = summary["fit_key"].map(lambda k: by_key[k].get("grad_norm"))
    summary["fallback_rate_train"] = inputs.train.group.attrs.get("fallback_rate")
    summary["fallback_rate_eval"] = evals.group.attrs.get("fallback_rate")
    figure = figure3(evals, metas, params.figure_samples, ctx.device)
    return Output(
        tables={TABLE: summary}, figures={"fig3": figure}, fits=[m["fit_dir"] for m in metas]
    )


def figure3(store: FeatureStore, fit_metas: list[dict], n_samples: int, device: str) -> Image:
    """Image, segmenter label and each fit's prediction for the first evaluation samples."""
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
    return comparison_grid(chunk.images[:k], rows, spec.class_names)

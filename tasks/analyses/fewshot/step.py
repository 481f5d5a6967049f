"""Few-shot LSE analysis (Table 2): N ∈ {1, 4, 8, 16} labelled images, 5 disjoint repeats.

Every (N, repeat) LSE is trained through :func:`tasks.fit.fit_or_reuse` on N images of the
training store held in memory (batch = N), checkpointed under
``<results_root>/fits/fewshot-n<N>-r<repeat>-<key16>`` (a rerun after a crash reloads the
finished ones), then all of them are evaluated in a single pass over the evaluation store.
Training never waits for Table 1: only :func:`summarize` needs the full LSE's mIoU.

Tables (every row also has ``profile``, ``run_id``, ``code_version``, ``created_at``):

- ``fewshot`` (one row per (n_shot, repeat); part key = the analysis key): generator, segmenter, extractor ("LSE"), n_shot, repeat, train_indices (comma
  separated training-store indices), miou (fraction), iterations, seed (torch seed of the fit),
  final_loss, train_seconds, n_train_store, n_eval, fit_dir, key.
- ``fewshot_per_class`` (same part key): generator, segmenter, n_shot, repeat, class_index,
  class_name, iou (fraction, NaN where the class never counted), images, key. Background is
  left out (Appx A).
- ``fewshot_summary`` (part key = the analysis key; rewritten by :func:`summarize`): generator, segmenter, n_shot, repeats,
  mean_miou, max_dev (max |miou − mean| over repeats), ratio_to_full (mean_miou /
  reference_miou, NaN without a reference), reference_miou (NaN when None), key.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pandas as pd
import pyarrow as pa

from lineargan.analyses.fewshot import (
    FewShotParams,
    FixedSamples,
    fewshot_schedule,
    repeat_seed,
    summarize_runs,
)
from lineargan.config import FitConfig, FitMethod, fit_label
from lineargan.device import resolve_device
from lineargan.evaluate import evaluate_subsets
from storage.checkpoints import load_extractor
from storage.feature_store import FeatureStore
from storage.tables import CLASS_IOU, MODELS, schema
from tasks.analyses.contract import Inputs, Output, unchanged
from tasks.analyses.fewshot.science import fewshot_runs
from tasks.fit import FitJob, fit_or_reuse, full_batch
from tasks.run_context import RunContext

NAME = "fewshot"
RUNS_TABLE = "fewshot"
PER_CLASS_TABLE = "fewshot_per_class"
SUMMARY_TABLE = "fewshot_summary"

TABLES = {
    RUNS_TABLE: schema(
        **MODELS,
        extractor=pa.string(),
        method=pa.string(),
        n_shot=pa.int64(),
        repeat=pa.int64(),
        train_indices=pa.string(),
        iterations=pa.int64(),
        seed=pa.int64(),
        final_loss=pa.float64(),
        train_seconds=pa.float64(),
        converged=pa.bool_(),
        grad_norm=pa.float64(),
        n_train_store=pa.int64(),
        n_eval=pa.int64(),
        fit_dir=pa.string(),
        miou=pa.float64(),
        miou_detected=pa.float64(),
        n_eval_detected=pa.int64(),
        key=pa.string(),
    ),
    PER_CLASS_TABLE: schema(
        **MODELS,
        method=pa.string(),
        n_shot=pa.int64(),
        repeat=pa.int64(),
        **CLASS_IOU,
        key=pa.string(),
    ),
    SUMMARY_TABLE: schema(
        **MODELS,
        method=pa.string(),
        n_shot=pa.int64(),
        repeats=pa.int64(),
        mean_miou=pa.float64(),
        max_dev=pa.float64(),
        mean_miou_detected=pa.float64(),
        ratio_to_full=pa.float64(),
        reference_miou=pa.float64(),
        key=pa.string(),
    ),
}


def fit_fewshot(
    ctx: RunContext,
    params: FewShotParams,
    train: FeatureStore,
    run: tuple[FitMethod, int, int, int, np.ndarray],
) -> dict:
    """One few-shot LSE of :func:`fewshot_runs` through the one fit-or-reuse routine: Table 2,
    SCS and SIE all get the same checkpoint for the same (parameters, N, repeat)."""
    method, n_shot, iterations, repeat, indices = run
    schedule = fewshot_schedule(n_shot, iterations, params.lr, params.lr_drop_at)
    solver = params.solver if method == "converged" else None
    job = FitJob(
        cfg=FitConfig(
            extractor="LSE",
            method=method,
            schedule=schedule,
            solver=solver,
            seed=repeat_seed(params.seed, n_shot, repeat),
        ),
        prefix=f"fewshot-n{n_shot}-r{repeat}" + ("" if method == "schedule" else f"-{method}"),
        class_names=train.spec.class_names,
        key_extra={"train_indices": indices.tolist()},
        metadata={"train_indices": indices.tolist()},
    )
    return fit_or_reuse(
        train,
        ctx.train_url,
        job,
        ctx.results_root,
        source=lambda idx=indices: nullcontext(FixedSamples(*train.read_samples(idx))),
        device=ctx.device,
        chunks=full_batch(train, indices.tolist()) if method == "converged" else None,
    )


def _fit_all(
    ctx: RunContext, params: FewShotParams, train: FeatureStore
) -> tuple[list[dict], list[dict]]:
    """Every (N, repeat) fit; (records, fit metas)."""
    spec = train.spec
    records, metas = [], []
    for run in fewshot_runs(params, spec.n):
        method, n_shot, _, repeat, indices = run
        meta = fit_fewshot(ctx, params, train, run)
        metas.append(meta)
        records.append(
            {
                "generator": spec.generator,
                "segmenter": spec.segmenter,
                "extractor": "LSE",
                "method": method,
                "n_shot": n_shot,
                "repeat": repeat,
                "train_indices": ",".join(str(int(i)) for i in indices),
                "iterations": int(meta["iterations"]),
                "seed": int(meta["fit_config"]["seed"]),
                "final_loss": float(meta["final_loss"]),
                "train_seconds": float(meta["train_seconds"]),
                "converged": meta.get("converged"),
                "grad_norm": meta.get("grad_norm"),
                "n_train_store": spec.n,
                "fit_dir": meta["fit_dir"],
            }
        )
    return records, metas


def compute(ctx: RunContext, params: FewShotParams, inputs: Inputs) -> Output:
    """Train every (N, repeat) few-shot LSE and evaluate them all in one pass (Table 2 rows)."""
    train, evals = inputs.train, inputs.evals
    records, metas = _fit_all(ctx, params, train)
    dev = resolve_device(ctx.device)
    models = [load_extractor(m["fit_dir"], dev)[0] for m in metas]
    chunks = ((c.features, c.labels, c.detected) for _, c in evals.iter_chunks())
    subsets = evaluate_subsets(models, chunks, evals.spec.class_names, evals.spec.resolution, dev)
    results = [s["all"] for s in subsets]
    n_detected = evals.n_detected()
    runs = pd.DataFrame(
        [
            {
                **rec,
                "n_eval": evals.spec.n,
                "miou": sub["all"].miou,
                "miou_detected": sub["detected"].miou,
                "n_eval_detected": n_detected,
            }
            for rec, sub in zip(records, subsets, strict=True)
        ]
    )
    per_class = pd.DataFrame(
        [
            {
                "generator": rec["generator"],
                "segmenter": rec["segmenter"],
                "method": rec["method"],
                "n_shot": rec["n_shot"],
                "repeat": rec["repeat"],
                "class_index": c,
                "class_name": res.class_names[c],
                "iou": float(res.iou[c]),
                "images": int(res.images[c]),
            }
            for rec, res in zip(records, results, strict=True)
            for c in range(1, len(res.class_names))  # background ignored (Appx A)
        ]
    )
    tables = {PER_CLASS_TABLE: per_class, RUNS_TABLE: runs, SUMMARY_TABLE: _summary(runs, None)}
    return Output(tables=tables, fits=[m["fit_dir"] for m in metas])


def _summary(runs: pd.DataFrame, reference: dict[str, float | None] | None) -> pd.DataFrame:
    summary = summarize_runs(runs, reference)
    summary.insert(0, "generator", runs["generator"].iloc[0])
    summary.insert(1, "segmenter", runs["segmenter"].iloc[0])
    return summary


def summarize(params: FewShotParams, read, reference: dict) -> dict[str, pd.DataFrame]:
    """Table 2's summary with the ratio to the fully trained LSE of the same fit method
    (``reference["LSE"]``, ``reference["LSE:converged"]``)."""
    refs = {m: reference.get(fit_label("LSE", m)) for m in params.methods}
    stored = read(SUMMARY_TABLE)
    stored_refs = stored.drop_duplicates("method").set_index("method")["reference_miou"]
    if all(unchanged(float(stored_refs[m]), refs[m]) for m in params.methods):
        return {}
    return {SUMMARY_TABLE: _summary(read(RUNS_TABLE), refs)}

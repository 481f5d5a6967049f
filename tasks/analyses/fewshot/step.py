"""Few-shot LSE analysis (Table 2): N ∈ {1, 4, 8, 16} labelled images, 5 disjoint repeats.

Every (N, repeat) LSE is trained through :func:`tasks.fit.fit_or_reuse` on N images of the
training store held in memory (batch = N), checkpointed under
``<results_root>/fits/fewshot-n<N>-r<repeat>-<key16>`` (a rerun after a crash reloads the
finished ones), then all of them are evaluated in a single pass over the evaluation store.
Training never waits for Table 1: only :func:`summarize` needs the full LSE's mIoU.

Tables (every row also has ``profile``, ``run_id``, ``code_version``, ``created_at``):

- ``fewshot`` (one row per (n_shot, repeat); part key = the analysis key): generator, segmenter, extractor ("LSE"), n_shot, repeat, train_indices (comma
  separated training-store indices), miou (fraction), iterations, seed (torch seed of the fit),
  final_loss, train_seconds, converged / grad_norm (the converged fits' stopping rule), l2 /
  holdout_miou / n_holdout (a converged fit's chosen ridge penalty, its mIoU on the held-out
  training images that chose it, and their number), n_train_store, n_eval, fit_dir, key.
- ``fewshot_per_class`` (same part key): generator, segmenter, n_shot, repeat, class_index,
  class_name, iou (fraction, NaN where the class never counted), images, key. Background is
  left out (Appx A).
- ``fewshot_summary`` (part key = the analysis key; rewritten by :func:`summarize`): generator, segmenter, n_shot, repeats,
  mean_miou, max_dev (max |miou − mean| over repeats), ratio_to_full (mean_miou /
  reference_miou, NaN without a reference), reference_miou (NaN when None), stopped_by_rule
  (repeats whose fit met its stopping rule), l2 (the chosen ridge penalties with counts), key.
- ``fewshot_ridge`` (converged fits only): every candidate λ of every (N, repeat): l2,
  holdout_miou, converged, iterations, fit_dir, chosen, n_holdout, key.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from lineargan.analyses.fewshot import (
    EpochRefreshedSamples,
    FewShotParams,
    FixedSamples,
    choose_l2,
    epoch_steps,
    fewshot_schedule,
    holdout_indices,
    repeat_seed,
    summarize_runs,
)
from lineargan.config import FitConfig, FitMethod, fit_label
from lineargan.device import resolve_device
from lineargan.evaluate import evaluate_many, evaluate_subsets
from lineargan.models import GeneratorAdapter
from storage.checkpoints import load_extractor
from storage.feature_store import FeatureStore
from storage.tables import CLASS_IOU, MODELS, schema
from tasks.analyses.contract import Inputs, Output, unchanged
from tasks.analyses.fewshot.science import fewshot_runs
from tasks.fit import FitJob, fit_or_reuse, full_batch
from tasks.run_context import RunContext
from tasks.store_models import noise_generator, regenerate_features

NAME = "fewshot"
RUNS_TABLE = "fewshot"
PER_CLASS_TABLE = "fewshot_per_class"
SUMMARY_TABLE = "fewshot_summary"
RIDGE_TABLE = "fewshot_ridge"

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
        l2=pa.float64(),
        holdout_miou=pa.float64(),
        n_holdout=pa.int64(),
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
        stopped_by_rule=pa.int64(),
        l2=pa.string(),
        key=pa.string(),
    ),
    RIDGE_TABLE: schema(
        **MODELS,
        method=pa.string(),
        n_shot=pa.int64(),
        repeat=pa.int64(),
        l2=pa.float64(),
        holdout_miou=pa.float64(),
        converged=pa.bool_(),
        iterations=pa.int64(),
        fit_dir=pa.string(),
        chosen=pa.bool_(),
        n_holdout=pa.int64(),
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
    SCS and SIE all get the same checkpoint for the same (parameters, N, repeat).

    A converged one is fitted once per ridge penalty of ``params.l2_grid`` (each its own
    checkpoint) and the one with the best mIoU on the held-out training images is returned,
    its metadata extended by ``l2``, ``holdout_miou``, ``n_holdout`` and ``l2_candidates``
    (every candidate's λ, held-out mIoU, stopping rule met, iterations, fit_dir)."""
    method = run[0]
    if method == "schedule":
        return _fit_one(ctx, params, train, run, None)
    metas = [_fit_one(ctx, params, train, run, lam) for lam in params.l2_grid]
    holdout = holdout_indices(train.spec.n, params)
    scores = holdout_mious(ctx, train, holdout, metas)
    lam = choose_l2(dict(zip(params.l2_grid, scores, strict=True)))
    best = params.l2_grid.index(lam)
    candidates = [
        {
            "l2": g,
            "holdout_miou": score,
            "converged": bool(m.get("converged")),
            "iterations": int(m["iterations"]),
            "fit_dir": m["fit_dir"],
        }
        for g, score, m in zip(params.l2_grid, scores, metas, strict=True)
    ]
    return {
        **metas[best],
        "l2": lam,
        "holdout_miou": scores[best],
        "n_holdout": len(holdout),
        "l2_candidates": candidates,
    }


def holdout_mious(
    ctx: RunContext,
    train: FeatureStore,
    holdout: np.ndarray,
    metas: list[dict],
    batch: int = 32,
) -> list[float]:
    """mIoU of each fit on the held-out training images (one pass, ``batch`` at a time)."""
    dev = resolve_device(ctx.device)
    models = [load_extractor(m["fit_dir"], dev)[0] for m in metas]
    chunks = (train.read_samples(holdout[s : s + batch]) for s in range(0, len(holdout), batch))
    spec = train.spec
    return [r.miou for r in evaluate_many(models, chunks, spec.class_names, spec.resolution, dev)]


def _fit_one(
    ctx: RunContext,
    params: FewShotParams,
    train: FeatureStore,
    run: tuple[FitMethod, int, int, int, np.ndarray],
    l2: float | None,
) -> dict:
    """One checkpoint: the schedule (``l2`` None) or the converged fit with ridge ``l2``.

    A schedule with ``params.fresh_noise`` on a generator with noise inputs regenerates the N
    images' features with fresh noise every authors' epoch (:func:`fresh_noise_source`); its
    key and metadata say so. Without noise inputs it is the plain fit (same checkpoint)."""
    method, n_shot, iterations, repeat, indices = run
    schedule = fewshot_schedule(n_shot, iterations, params.lr, params.lr_drop_at)
    solver = None if l2 is None else params.solver.model_copy(update={"l2": l2})
    suffix = "" if l2 is None else f"-{method}-ridge{l2:.0e}"
    seed = repeat_seed(params.seed, n_shot, repeat)
    noisy = noise_generator(train, ctx.device) if l2 is None and params.fresh_noise else None
    steps = epoch_steps(n_shot, params.epoch_samples)
    extra = {} if noisy is None else {"fresh_noise_epoch_steps": steps}

    def source() -> nullcontext[FixedSamples]:
        if noisy is None:
            return nullcontext(FixedSamples(*train.read_samples(indices)))
        return nullcontext(fresh_noise_source(train, noisy, indices, seed, steps))

    job = FitJob(
        cfg=FitConfig(
            extractor="LSE",
            method=method,
            schedule=schedule,
            solver=solver,
            seed=seed,
        ),
        prefix=f"fewshot-n{n_shot}-r{repeat}{suffix}",
        class_names=train.spec.class_names,
        key_extra={"train_indices": indices.tolist(), **extra},
        metadata={"train_indices": indices.tolist(), **extra},
    )
    return fit_or_reuse(
        train,
        ctx.train_url,
        job,
        ctx.results_root,
        source=source,
        device=ctx.device,
        chunks=full_batch(train, indices.tolist()) if method == "converged" else None,
    )


def fresh_noise_source(
    train: FeatureStore, generator: GeneratorAdapter, indices: np.ndarray, seed: int, steps: int
) -> EpochRefreshedSamples:
    """The N samples (stored features, labels) whose features ``generator`` (drawing fresh
    noise) makes again every ``steps`` steps; epoch e's noise is seeded by (seed, e), so a
    fit and its resumed run see the same noise."""
    batch = train.read_selection(indices, features=True, images=False)
    device = next(generator.parameters()).device

    def refresh(epoch: int) -> list[np.ndarray]:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
            return regenerate_features(train, batch.latents, generator)

    return EpochRefreshedSamples(batch.features, batch.labels, refresh, steps)


def _fit_all(
    ctx: RunContext, params: FewShotParams, train: FeatureStore
) -> tuple[list[dict], list[dict], list[dict]]:
    """Every (N, repeat) fit; (records, fit metas, ridge candidates of the converged ones)."""
    spec = train.spec
    records, metas, candidates = [], [], []
    for run in fewshot_runs(params, spec.n):
        method, n_shot, _, repeat, indices = run
        meta = fit_fewshot(ctx, params, train, run)
        metas.append(meta)
        for c in meta.get("l2_candidates", []):
            candidates.append(
                {
                    "generator": spec.generator,
                    "segmenter": spec.segmenter,
                    "method": method,
                    "n_shot": n_shot,
                    "repeat": repeat,
                    **c,
                    "chosen": c["l2"] == meta["l2"],
                    "n_holdout": meta["n_holdout"],
                }
            )
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
                "l2": meta.get("l2"),
                "holdout_miou": meta.get("holdout_miou"),
                "n_holdout": meta.get("n_holdout"),
                "n_train_store": spec.n,
                "fit_dir": meta["fit_dir"],
            }
        )
    return records, metas, candidates


def compute(ctx: RunContext, params: FewShotParams, inputs: Inputs) -> Output:
    """Train every (N, repeat) few-shot LSE and evaluate them all in one pass (Table 2 rows)."""
    train, evals = inputs.train, inputs.evals
    records, metas, candidates = _fit_all(ctx, params, train)
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
    if candidates:
        tables[RIDGE_TABLE] = pd.DataFrame(candidates)
    fit_dirs = [c["fit_dir"] for m in metas for c in m.get("l2_candidates", [])]
    fit_dirs += [m["fit_dir"] for m in metas if "l2_candidates" not in m]
    return Output(tables=tables, fits=fit_dirs)


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

"""Few-shot LSE analysis (Table 2): N ∈ {1, 4, 8, 16} labelled images, 5 disjoint repeats.

Every (N, repeat) LSE is trained with :func:`lineargan.training.fit` on N images of the
training store held in memory (batch = N), checkpointed under
``<results_root>/fits/fewshot-<key16>-n<N>-r<repeat>`` (a rerun after a crash reloads the
finished ones), then all of them are evaluated in a single pass over the evaluation store.

Tables (every row also has ``profile``, ``run_id``, ``code_version``, ``created_at``):

- ``fewshot`` (one row per (n_shot, repeat); part key = the analysis key without the
  reference): generator, segmenter, extractor ("LSE"), n_shot, repeat, train_indices (comma
  separated training-store indices), miou (fraction), iterations, seed (torch seed of the fit),
  final_loss, train_seconds, n_train_store, n_eval, fit_dir, key.
- ``fewshot_per_class`` (same part key): generator, segmenter, n_shot, repeat, class_index,
  class_name, iou (fraction, NaN where the class never counted), images, key. Background is
  left out (Appx A).
- ``fewshot_summary`` (part key = the analysis key): generator, segmenter, n_shot, repeats,
  mean_miou, max_dev (max |miou − mean| over repeats), ratio_to_full (mean_miou /
  reference_miou, NaN without a reference), reference_miou (NaN when None), key.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from pydantic import Field, PositiveInt, model_validator

from lineargan.config import Frozen, get_profile
from lineargan.device import resolve_device
from lineargan.errors import LinearGanError
from lineargan.evaluate import evaluate_many
from lineargan.extractors import build_extractor, load_extractor, save_extractor
from lineargan.fewshot import (
    FixedSamples,
    choose_train_indices,
    fewshot_schedule,
    load_samples,
    repeat_seed,
    summarize,
    table2_markdown,
)
from lineargan.jobs.analysis import (
    AnalysisContext,
    AnalysisResult,
    analysis_key,
    load_finished,
    save_finished,
)
from lineargan.jobs.models import limit_torch_threads
from lineargan.training import fit
from storage.feature_store import FeatureStore
from storage.layout import table_part
from storage.tables import read_table_part, run_metadata, write_table_part
from storage.target import Target

NAME = "fewshot"
RUNS_TABLE = "fewshot"
PER_CLASS_TABLE = "fewshot_per_class"
SUMMARY_TABLE = "fewshot_summary"

PAPER_SHOTS = (1, 4, 8, 16)
PAPER_ITERATIONS = (2000, 2000, 1000, 500)


class FewShotParams(Frozen):
    """Shots N, iterations per N (aligned with ``shots``), repeats per N, seed, Adam lr."""

    shots: tuple[PositiveInt, ...] = PAPER_SHOTS
    iterations: tuple[PositiveInt, ...] = PAPER_ITERATIONS
    repeats: PositiveInt = 5
    seed: int = Field(0, ge=0)
    lr: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FewShotParams:
        if len(self.shots) != len(self.iterations):
            raise LinearGanError(
                f"{len(self.shots)} shots but {len(self.iterations)} iteration counts",
                "give one iteration count per entry of shots",
            )
        if len(set(self.shots)) != len(self.shots):
            raise LinearGanError(f"repeated entries in shots {self.shots}", "list each N once")
        return self

    @classmethod
    def for_profile(cls, profile: str) -> FewShotParams:
        """``paper``: Table 2 settings; ``quick``: iterations / 4; ``smoke``: N ∈ {1, 4},
        2 repeats, 20 iterations."""
        get_profile(profile)
        if profile == "smoke":
            return cls(shots=(1, 4), iterations=(20, 20), repeats=2)
        if profile == "quick":
            return cls(iterations=tuple(max(1, i // 4) for i in PAPER_ITERATIONS))
        return cls()


class _SummaryKey(Frozen):
    params: FewShotParams
    reference_miou: float | None


def _fit_dir(results_root: str, rows_key: str, n_shot: int, repeat: int) -> Path:
    target = Target(results_root) / "fits" / f"fewshot-{rows_key[:16]}-n{n_shot}-r{repeat}"
    return Path(target.path)


def _train_and_evaluate(
    ctx: AnalysisContext,
    params: FewShotParams,
    rows_key: str,
    train: FeatureStore,
    evals: FeatureStore,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    dev = resolve_device(ctx.device)
    spec = train.spec
    models, records = [], []
    # draw every N first: a store too small for the largest N fails before any training
    all_draws = [choose_train_indices(spec.n, n, params.repeats, params.seed) for n in params.shots]
    for n_shot, iterations, draws in zip(params.shots, params.iterations, all_draws, strict=True):
        schedule = fewshot_schedule(n_shot, iterations, params.lr)
        for repeat, indices in enumerate(draws):
            fit_dir = _fit_dir(ctx.results_root, rows_key, n_shot, repeat)
            seed = repeat_seed(params.seed, n_shot, repeat)
            if (fit_dir / "config.json").exists():
                model, meta = load_extractor(fit_dir, dev)
            else:
                torch.manual_seed(seed)
                model = build_extractor(
                    "LSE", n_class=len(spec.class_names), dims=[s[0] for s in spec.layer_shapes]
                )
                source = FixedSamples(*load_samples(train, indices))
                result = fit(model, source, schedule, spec.resolution, dev, seed=seed)
                meta = {
                    "iterations": result.iterations,
                    "final_loss": result.final_loss,
                    "train_seconds": round(result.seconds, 3),
                }
                save_extractor(model, fit_dir, metadata={**meta, "train_indices": indices.tolist()})
            models.append(model)
            records.append(
                {
                    "generator": spec.generator,
                    "segmenter": spec.segmenter,
                    "extractor": "LSE",
                    "n_shot": n_shot,
                    "repeat": repeat,
                    "train_indices": ",".join(str(int(i)) for i in indices),
                    "iterations": int(meta["iterations"]),
                    "seed": seed,
                    "final_loss": float(meta["final_loss"]),
                    "train_seconds": float(meta["train_seconds"]),
                    "n_train_store": spec.n,
                    "n_eval": evals.spec.n,
                    "fit_dir": str(fit_dir),
                }
            )
    chunks = ((c.features, c.labels) for _, c in evals.iter_chunks())
    results = evaluate_many(models, chunks, evals.spec.class_names, evals.spec.resolution, dev)
    meta_cols = {**run_metadata(ctx.profile, ctx.run_id), "key": rows_key}
    runs = pd.DataFrame(
        [{**rec, "miou": res.miou, **meta_cols} for rec, res in zip(records, results, strict=True)]
    )
    per_class = pd.DataFrame(
        [
            {
                "generator": rec["generator"],
                "segmenter": rec["segmenter"],
                "n_shot": rec["n_shot"],
                "repeat": rec["repeat"],
                "class_index": c,
                "class_name": res.class_names[c],
                "iou": float(res.iou[c]),
                "images": int(res.images[c]),
                **meta_cols,
            }
            for rec, res in zip(records, results, strict=True)
            for c in range(1, len(res.class_names))  # background ignored (Appx A)
        ]
    )
    return runs, per_class


def _per_class_markdown(per_class: pd.DataFrame) -> str:
    """Per-class IoU (%) averaged over repeats: one row per N, one column per class."""
    wide = per_class.pivot_table(index="n_shot", columns="class_index", values="iou") * 100
    names = per_class.drop_duplicates("class_index").set_index("class_index")["class_name"]
    lines = [
        "| N-shot | " + " | ".join(names[c] for c in wide.columns) + " |",
        "|---|" + "---|" * len(wide.columns),
    ]
    for n_shot, row in wide.iterrows():
        cells = " | ".join("–" if pd.isna(v) else f"{v:.1f}" for v in row)
        lines.append(f"| {n_shot} | {cells} |")
    return "\n".join(lines)


def run_fewshot(
    ctx: AnalysisContext, params: FewShotParams, reference_miou: float | None = None
) -> AnalysisResult:
    """Train and evaluate every (N, repeat) few-shot LSE; Table 2 as Parquet + markdown.

    ``reference_miou`` is the fully trained LSE's mIoU (fraction) for the ratio column. The
    per-repeat rows do not depend on it: a rerun with another reference only redoes the summary.
    """
    limit_torch_threads()
    rows_key = analysis_key(NAME, params, ctx)
    key = (
        rows_key
        if reference_miou is None
        else analysis_key(NAME, _SummaryKey(params=params, reference_miou=reference_miou), ctx)
    )
    if (done := load_finished(ctx, NAME, key)) is not None:
        return done
    Target(ctx.results_root).ensure_writable()
    train, evals = ctx.stores()
    runs = read_table_part(ctx.results_root, RUNS_TABLE, rows_key)
    per_class = read_table_part(ctx.results_root, PER_CLASS_TABLE, rows_key)
    if runs is None or per_class is None:
        runs, per_class = _train_and_evaluate(ctx, params, rows_key, train, evals)
        write_table_part(ctx.results_root, PER_CLASS_TABLE, rows_key, per_class)
        write_table_part(ctx.results_root, RUNS_TABLE, rows_key, runs)
    summary = summarize(runs, reference_miou)
    summary.insert(0, "generator", train.spec.generator)
    summary.insert(1, "segmenter", train.spec.segmenter)
    summary["key"] = key
    for col, val in run_metadata(ctx.profile, ctx.run_id).items():
        summary[col] = val
    tables = {
        RUNS_TABLE: table_part(ctx.results_root, RUNS_TABLE, rows_key).url,
        PER_CLASS_TABLE: table_part(ctx.results_root, PER_CLASS_TABLE, rows_key).url,
        SUMMARY_TABLE: write_table_part(ctx.results_root, SUMMARY_TABLE, key, summary),
    }
    iters = ", ".join(f"N={n}: {i}" for n, i in zip(params.shots, params.iterations, strict=True))
    markdown = (
        f"## Table 2 — few-shot LSE, mIoU (%) (profile `{ctx.profile}`, run `{ctx.run_id}`)\n\n"
        f"{train.spec.generator} / {train.spec.segmenter}\n\n"
        + table2_markdown(summary)
        + f"\n\nMean ± maximum deviation over {params.repeats} repeats with disjoint training "
        f"images drawn from the {train.spec.n}-image training store (seed {params.seed}); batch "
        f"= N, iterations {iters}, Adam lr {params.lr:g}; evaluated on {evals.spec.n} images. "
        "Last column: mean relative to the fully trained LSE.\n\n"
        "### Per-class IoU (%), mean over repeats\n\n" + _per_class_markdown(per_class) + "\n"
    )
    return save_finished(ctx, AnalysisResult(name=NAME, key=key, tables=tables, markdown=markdown))

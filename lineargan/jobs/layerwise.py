"""Layer-wise analysis (Appx I, Eq. 8, Fig 10): what each generator layer alone segments.

An LSE is trained on the training store with the profile's full schedule and the extra
per-layer loss of Eq. 8, L = CE(S, Y) + Σ_i α·CE(u↑(S_i), Y) with α = 0.1 (via
``fit(..., layer_loss_weight=α)``), checkpointed under ``<results_root>/fits/layerwise-<key16>``.
On the evaluation store, each layer's own prediction argmax u↑(S_i) and the full sum are scored
with the Appx A IoU in one pass.

Tables (every row also has ``profile``, ``run_id``, ``code_version``, ``created_at``):

- ``layerwise`` (part key = analysis key): generator, segmenter, alpha, layer_index (0-based
  generator order; -1 for the sum), layer_name (``spec.layer_names``; "all" for the sum),
  class_index, class_name, iou (fraction, NaN where the class never counted), images, key.
  Background is left out (Appx A).
- ``layerwise_summary``: generator, segmenter, alpha, layer_index, layer_name, layer_size
  (feature-map side h; the output resolution for "all"), miou, iterations, n_train, n_eval, key.

Figures: ``figures/layerwise-<profile>-<key8>.png`` (mIoU by layer, the sum as a dashed line) and
``figures/layerwise-seg-<profile>-<key8>.png`` (Fig 10 style: image, segmenter label, each layer's
prediction and the sum for the first evaluation images).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from pydantic import Field, PositiveInt
from torch import nn

from lineargan.config import Frozen, RunConfig, Schedule
from lineargan.device import resolve_device
from lineargan.evaluate import evaluate_many, predict
from lineargan.extractors import build_extractor, load_extractor, save_extractor
from lineargan.extractors.base import LayerView, SemanticExtractor
from lineargan.figures import comparison_grid, layer_miou_plot
from lineargan.jobs.analysis import (
    AnalysisContext,
    AnalysisResult,
    analysis_key,
    figure_name,
    load_finished,
    save_finished,
)
from lineargan.jobs.models import limit_torch_threads
from lineargan.training import fit
from storage.feature_store import FeatureStore
from storage.layout import fit_target, write_figure
from storage.stream import ChunkStream
from storage.tables import run_metadata, write_table_part
from storage.target import Target

NAME = "layerwise"
TABLE = "layerwise"
SUMMARY_TABLE = "layerwise_summary"
ALL = "all"


class LayerwiseParams(Frozen):
    """α of Eq. 8, the training schedule, the fit seed and how many images Fig 10 shows."""

    alpha: float = Field(0.1, gt=0)
    schedule: Schedule = Schedule()
    seed: int = Field(0, ge=0)
    figure_samples: PositiveInt = 3

    @classmethod
    def for_profile(cls, profile: str) -> LayerwiseParams:
        """The profile's full LSE schedule (the same one Table 1 uses)."""
        return cls(schedule=RunConfig(profile=profile).fit("LSE").schedule)


def _train(
    ctx: AnalysisContext, params: LayerwiseParams, key: str, train: FeatureStore
) -> tuple[SemanticExtractor, dict]:
    """The Eq. 8 LSE: reloaded when its checkpoint exists, trained otherwise."""
    dev = resolve_device(ctx.device)
    fit_dir = Path(fit_target(ctx.results_root, NAME, key).path)
    if (fit_dir / "config.json").exists():
        return load_extractor(fit_dir, dev)
    spec = train.spec
    torch.manual_seed(params.seed)
    model = build_extractor(
        "LSE", n_class=len(spec.class_names), dims=[s[0] for s in spec.layer_shapes]
    )
    with ChunkStream(train, seed=params.seed) as stream:
        result = fit(
            model,
            stream,
            params.schedule,
            spec.resolution,
            dev,
            seed=params.seed,
            layer_loss_weight=params.alpha,
        )
    meta = {
        "alpha": params.alpha,
        "iterations": result.iterations,
        "final_loss": result.final_loss,
        "train_seconds": round(result.seconds, 3),
    }
    save_extractor(model, fit_dir, metadata=meta)
    return model, meta


def _summary_markdown(summary: pd.DataFrame) -> str:
    lines = ["| layer | name | size | mIoU (%) |", "|---|---|---|---|"]
    for r in summary.itertuples(index=False):
        idx = "Σ" if r.layer_index < 0 else str(r.layer_index)
        lines.append(f"| {idx} | {r.layer_name} | {r.layer_size} | {100 * r.miou:.1f} |")
    return "\n".join(lines)


def _per_class_markdown(rows: pd.DataFrame, order: list[str]) -> str:
    wide = rows.pivot_table(index="layer_name", columns="class_index", values="iou") * 100
    wide = wide.reindex(order)
    names = rows.drop_duplicates("class_index").set_index("class_index")["class_name"]
    lines = [
        "| layer | " + " | ".join(names[c] for c in wide.columns) + " |",
        "|---|" + "---|" * len(wide.columns),
    ]
    for name, row in wide.iterrows():
        lines.append(
            f"| {name} | " + " | ".join("–" if pd.isna(v) else f"{v:.1f}" for v in row) + " |"
        )
    return "\n".join(lines)


def run_layerwise(ctx: AnalysisContext, params: LayerwiseParams) -> AnalysisResult:
    """Train the Eq. 8 LSE, score every layer alone and the sum; tables, PNGs, markdown."""
    limit_torch_threads()
    key = analysis_key(NAME, params, ctx)
    if (done := load_finished(ctx, NAME, key)) is not None:
        return done
    Target(ctx.results_root).ensure_writable()
    train, evals = ctx.stores()
    spec = evals.spec
    dev = resolve_device(ctx.device)
    model, fit_meta = _train(ctx, params, key, train)
    n_layers = len(spec.layer_names)
    views: list[nn.Module] = [LayerView(model, i) for i in range(n_layers)] + [model]
    chunks = ((c.features, c.labels) for _, c in evals.iter_chunks())
    results = evaluate_many(views, chunks, spec.class_names, spec.resolution, dev)

    indices = list(range(n_layers)) + [-1]
    names = list(spec.layer_names) + [ALL]
    sizes = [s[1] for s in spec.layer_shapes] + [spec.resolution]
    common = {"generator": spec.generator, "segmenter": spec.segmenter, "alpha": params.alpha}
    meta_cols = {"key": key, **run_metadata(ctx.profile, ctx.run_id)}
    rows = pd.DataFrame(
        [
            {
                **common,
                "layer_index": i,
                "layer_name": name,
                "class_index": c,
                "class_name": spec.class_names[c],
                "iou": float(res.iou[c]),
                "images": int(res.images[c]),
                **meta_cols,
            }
            for i, name, res in zip(indices, names, results, strict=True)
            for c in range(1, len(spec.class_names))  # background ignored (Appx A)
        ]
    )
    summary = pd.DataFrame(
        [
            {
                **common,
                "layer_index": i,
                "layer_name": name,
                "layer_size": size,
                "miou": res.miou,
                "iterations": int(fit_meta["iterations"]),
                "n_train": train.spec.n,
                "n_eval": spec.n,
                **meta_cols,
            }
            for i, name, size, res in zip(indices, names, sizes, results, strict=True)
        ]
    )
    tables = {
        TABLE: write_table_part(ctx.results_root, TABLE, key, rows),
        SUMMARY_TABLE: write_table_part(ctx.results_root, SUMMARY_TABLE, key, summary),
    }

    title = f"Layer-wise mIoU, {spec.generator} / {spec.segmenter} (alpha={params.alpha:g})"
    figures = [
        write_figure(
            ctx.results_root, figure_name("layerwise", ctx, key), layer_miou_plot(summary, title)
        )
    ]
    chunk = evals.read_chunk(0, features=True, images=True)
    k = min(params.figure_samples, len(chunk.labels))
    feats = [f[:k] for f in chunk.features]
    seg_rows = {"segmenter": chunk.labels[:k]}
    for name, view in zip(names, views, strict=True):
        seg_rows[name] = predict(view, feats, spec.resolution, dev)
    grid = comparison_grid(chunk.images[:k], seg_rows, spec.class_names)
    figures.append(write_figure(ctx.results_root, figure_name("layerwise-seg", ctx, key), grid))

    markdown = (
        f"## Layer-wise semantics (Appx I) — mIoU (%) of each layer alone "
        f"(profile `{ctx.profile}`, run `{ctx.run_id}`)\n\n"
        f"{spec.generator} / {spec.segmenter}; LSE trained with Eq. 8, α = {params.alpha:g}, "
        f"{fit_meta['iterations']} iterations on {train.spec.n} images; evaluated on "
        f"{spec.n} images. A layer's prediction is argmax u↑(S_i); Σ is the full LSE.\n\n"
        + _summary_markdown(summary)
        + "\n\n### Per-class IoU (%)\n\n"
        + _per_class_markdown(rows, names)
        + "\n\nFigures: "
        + ", ".join(f"`{u}`" for u in figures)
        + "\n"
    )
    return save_finished(
        ctx,
        AnalysisResult(name=NAME, key=key, tables=tables, figures=figures, markdown=markdown),
    )

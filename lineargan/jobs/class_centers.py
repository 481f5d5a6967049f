"""Class centers (Sec 3.3, Fig 4): segment images by the nearest class center on the n-sphere.

From the first ``n_images`` images of the training store, every pixel's unit feature vector
(all layers u↑ to one resolution, concatenated, normalised: :mod:`lineargan.geometry`) is
added to its class's sum; the per-class mean, renormalised, is the class center c_k. The
background is a class like any other and gets a center too (a pixel must be able to be
background), although IoU ignores it (Appx A). Evaluation images are then segmented by
argmax_k c_k · x̂ — the score maps computed at the feature resolution and bilinearly upsampled
to the label resolution before the argmax, as an LSE's logits are — and scored with
:class:`lineargan.metrics.IoUAccumulator`. Both passes stream ≤ 8 images at a time.

Tables (each part keyed by the analysis key; every row also carries ``profile``, ``run_id``,
``code_version``, ``created_at``):

- ``class_centers_iou``: generator, segmenter, method (``"class-centers"``), analysis_key,
  class_index, class_name, iou (fraction, NaN where never counted), images (evaluation images
  in which the class counted), n_images (training images used), resolution. Background
  (class 0) is not listed (ignored by Appx A).
- ``class_centers_summary``: generator, segmenter, method, analysis_key, miou, lse_miou (the
  LSE mIoU of Table 1 passed in by the flow, NaN when not given), n_images, n_eval,
  resolution, feature_dim.
- ``class_centers``: generator, segmenter, analysis_key, class_index, class_name, n_pixels
  (training pixels of the class at ``resolution``), center (list<float>: the unit center,
  empty when the class had no pixel), resolution.

Figure ``fig4-<profile>-<key8>.png``: image | segmenter label | class-center segmentation for the
first ``figure_samples`` evaluation images.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from pydantic import PositiveInt

from lineargan.config import Frozen, get_profile
from lineargan.device import resolve_device
from lineargan.figures import comparison_grid
from lineargan.geometry import (
    ClassSumAccumulator,
    feature_dim,
    image_batches,
    labels_at,
    resolve_resolution,
    segment_by_centers,
    unit_pixel_features,
)
from lineargan.jobs.analysis import (
    AnalysisContext,
    AnalysisResult,
    analysis_key,
    figure_name,
    load_finished,
    save_finished,
)
from lineargan.jobs.models import limit_torch_threads
from lineargan.metrics import IoUAccumulator, IoUResult
from storage.feature_store import FeatureStore, StoreSpec
from storage.layout import write_figure
from storage.tables import read_table_part, run_metadata, write_table_part

NAME = "class_centers"
IOU_TABLE = "class_centers_iou"
SUMMARY_TABLE = "class_centers_summary"
CENTERS_TABLE = "class_centers"
METHOD = "class-centers"

_PROFILE_IMAGES = {"paper": 3000, "quick": 1024, "smoke": 64}


class ClassCentersParams(Frozen):
    """Sec 3.3: centers from ``n_images`` training images (paper: 3000)."""

    n_images: PositiveInt = 3000
    resolution: PositiveInt | None = None  # None: the largest feature-map resolution
    figure_samples: PositiveInt = 6

    @classmethod
    def for_profile(cls, profile: str) -> ClassCentersParams:
        p = get_profile(profile)
        return cls(
            n_images=_PROFILE_IMAGES.get(profile, min(3000, p.n_train)),
            figure_samples=p.figure_samples,
        )


@torch.no_grad()
def accumulate_class_sums(
    store: FeatureStore, n_images: int, size: int, device: torch.device
) -> tuple[ClassSumAccumulator, int]:
    """Sum the unit vectors of each class over the first ``n_images`` images of ``store``."""
    spec = store.spec
    acc = ClassSumAccumulator(len(spec.class_names), feature_dim(spec.layer_shapes), device)
    used = 0
    for i in range(spec.n_chunks):
        if used >= n_images:
            break
        chunk = store.read_chunk(i, features=True)
        take = min(len(chunk.labels), n_images - used)
        for sl in image_batches(take):
            unit = unit_pixel_features([f[sl] for f in chunk.features], size, device)
            acc.update(unit, labels_at(chunk.labels[sl], size))
        used += take
    return acc, used


@torch.no_grad()
def segment_store(
    store: FeatureStore,
    centers: torch.Tensor,
    present: torch.Tensor,
    size: int,
    device: torch.device,
    figure_samples: int = 0,
) -> tuple[IoUResult, dict[str, np.ndarray]]:
    """IoU (Appx A) of nearest-center segmentation over the whole store, and the first
    ``figure_samples`` images with their labels and predictions for the figure."""
    spec = store.spec
    acc = IoUAccumulator(spec.class_names)
    fig: dict[str, np.ndarray] = {}
    for i in range(spec.n_chunks):
        chunk = store.read_chunk(i, features=True, images=(i == 0 and figure_samples > 0))
        preds = []
        for sl in image_batches(len(chunk.labels)):
            unit = unit_pixel_features([f[sl] for f in chunk.features], size, device)
            pred = segment_by_centers(unit, centers, present, spec.resolution)
            acc.update(pred, chunk.labels[sl])
            if i == 0 and sl.start < figure_samples:
                preds.append(pred.cpu().numpy())
        if i == 0 and figure_samples > 0:
            k = min(figure_samples, len(chunk.labels))
            fig = {
                "images": chunk.images[:k],
                "labels": chunk.labels[:k],
                "preds": np.concatenate(preds)[:k],
            }
    return acc.result(), fig


def run_class_centers(
    ctx: AnalysisContext, params: ClassCentersParams, lse_miou: float | None = None
) -> AnalysisResult:
    """Class centers from the training store, nearest-center segmentation of the evaluation
    store; ``lse_miou`` (Table 1's LSE mIoU, not part of the key) is shown for comparison."""
    key = analysis_key(NAME, params, ctx)
    if (done := load_finished(ctx, NAME, key)) is not None:
        return _refresh_lse(ctx, done, lse_miou)
    limit_torch_threads()
    train, evals = ctx.stores()
    spec = train.spec
    size = resolve_resolution(spec.layer_shapes, spec.resolution, params.resolution)
    dev = resolve_device(ctx.device)

    sums, used = accumulate_class_sums(train, params.n_images, size, dev)
    centers, present = sums.centers()
    result, fig = segment_store(evals, centers, present, size, dev, params.figure_samples)

    meta = run_metadata(ctx.profile, ctx.run_id)
    base = {"generator": spec.generator, "segmenter": spec.segmenter}
    iou = pd.DataFrame(
        {
            **base,
            "method": METHOD,
            "analysis_key": key,
            "class_index": range(len(spec.class_names)),
            "class_name": list(spec.class_names),
            "iou": result.iou,
            "images": result.images,
            "n_images": used,
            "resolution": size,
            **meta,
        }
    )
    iou = iou[iou.class_index != 0].reset_index(drop=True)  # background ignored (Appx A)
    summary = _summary(base, key, result.miou, lse_miou, used, evals.spec.n, size, spec, meta)
    present_np = present.cpu().numpy()
    centers_df = pd.DataFrame(
        {
            **base,
            "analysis_key": key,
            "class_index": range(len(spec.class_names)),
            "class_name": list(spec.class_names),
            "n_pixels": sums.counts.cpu().numpy(),
            "center": [
                [float(v) for v in c] if ok else []
                for c, ok in zip(centers.cpu().numpy(), present_np, strict=True)
            ],
            "resolution": size,
            **meta,
        }
    )
    tables = {
        IOU_TABLE: write_table_part(ctx.results_root, IOU_TABLE, key, iou),
        SUMMARY_TABLE: write_table_part(ctx.results_root, SUMMARY_TABLE, key, summary),
        CENTERS_TABLE: write_table_part(ctx.results_root, CENTERS_TABLE, key, centers_df),
    }
    figures = []
    if fig:
        image = comparison_grid(
            fig["images"],
            {"segmenter": fig["labels"], "class centers": fig["preds"]},
            spec.class_names,
        )
        figures.append(write_figure(ctx.results_root, figure_name("fig4", ctx, key), image))
    md = render_markdown(iou, summary.iloc[0], ctx, figures, present_np, spec)
    return save_finished(
        ctx, AnalysisResult(name=NAME, key=key, tables=tables, figures=figures, markdown=md)
    )


def _summary(base, key, miou, lse_miou, used, n_eval, size, spec, meta) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                **base,
                "method": METHOD,
                "analysis_key": key,
                "miou": miou,
                "lse_miou": float("nan") if lse_miou is None else float(lse_miou),
                "n_images": used,
                "n_eval": n_eval,
                "resolution": size,
                "feature_dim": feature_dim(spec.layer_shapes),
                **meta,
            }
        ]
    )


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def render_markdown(
    iou: pd.DataFrame,
    summary: pd.Series,
    ctx: AnalysisContext,
    figures: list[str],
    present: np.ndarray,
    spec: StoreSpec,
) -> str:
    """Fig 4's numbers: per-class IoU and mIoU of nearest-center segmentation vs LSE."""
    names = list(iou["class_name"])
    lines = [
        f"## Fig 4 (Sec 3.3) — segmentation by class centers (profile `{ctx.profile}`, "
        f"run `{ctx.run_id}`)",
        "",
        "| method | mIoU | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
        f"| class centers | {_pct(summary['miou'])} | "
        + " | ".join(_pct(v) for v in iou["iou"])
        + " |",
    ]
    lse = summary["lse_miou"]
    if not pd.isna(lse):
        lines.append(f"| LSE (Table 1) | {_pct(lse)} | " + " | ".join("–" for _ in names) + " |")
    lines += [
        "",
        f"IoU in % (Appx A, background ignored). Centers from {summary['n_images']} training "
        f"images (paper: 3000), evaluated on {summary['n_eval']} images; unit feature vectors "
        f"of all layers at {summary['resolution']}×{summary['resolution']} "
        f"(n = {summary['feature_dim']}); scores upsampled bilinearly to "
        f"{spec.resolution}×{spec.resolution} before the argmax; the background has its own "
        "center.",
    ]
    missing = [n for n, ok in zip(spec.class_names, present, strict=True) if not ok]
    if missing:
        lines.append(f"\nClasses without any training pixel (no center): {', '.join(missing)}.")
    if not pd.isna(lse) and lse > 0:
        ratio = summary["miou"] / lse
        lines.append(f"\nClass centers reach {100 * ratio:.1f}% of the LSE's mIoU.")
    for url in figures:
        lines.append(f"\nFigure (image | segmenter | class centers): `{url}`")
    return "\n".join(lines) + "\n"


def _refresh_lse(
    ctx: AnalysisContext, done: AnalysisResult, lse_miou: float | None
) -> AnalysisResult:
    """A finished result with a different LSE mIoU: rewrite the summary row and markdown from
    the stored tables (nothing is recomputed; the key does not depend on the LSE mIoU)."""
    if lse_miou is None:
        return done
    summary = read_table_part(ctx.results_root, SUMMARY_TABLE, done.key)
    iou = read_table_part(ctx.results_root, IOU_TABLE, done.key)
    centers = read_table_part(ctx.results_root, CENTERS_TABLE, done.key)
    if summary is None or iou is None or centers is None:
        return done
    old = summary["lse_miou"].iloc[0]
    if not pd.isna(old) and math.isclose(float(old), float(lse_miou), rel_tol=0, abs_tol=1e-12):
        return done
    summary["lse_miou"] = float(lse_miou)
    write_table_part(ctx.results_root, SUMMARY_TABLE, done.key, summary)
    spec = ctx.train_store().spec
    present = np.array([len(c) > 0 for c in centers.sort_values("class_index")["center"]])
    md = render_markdown(iou, summary.iloc[0], ctx, done.figures, present, spec)
    saved = save_finished(
        ctx,
        AnalysisResult(
            name=done.name, key=done.key, tables=done.tables, figures=done.figures, markdown=md
        ),
    )
    saved.reused = True
    return saved

"""Class centers (Sec 3.3, Fig 4): segment images by the nearest class center on the n-sphere.

From the first ``n_images`` images of the training store, every pixel's unit feature vector
(all layers u↑ to one resolution, concatenated, normalised: :mod:`lineargan.analyses.geometry`) is
added to its class's sum; the per-class mean, renormalised, is the class center c_k. The
background is a class like any other and gets a center too (a pixel must be able to be
background), although IoU ignores it (Appx A). Evaluation images are then segmented by
argmax_k c_k · x̂ — the score maps computed at the feature resolution and bilinearly upsampled
to the label resolution before the argmax, as an LSE's logits are — and scored with
:class:`lineargan.metrics.SubsetIoU` (all images, and those the detector labelled). Both passes
stream ≤ 8 images at a time.

Tables (each part keyed by the analysis key; every row also carries ``profile``, ``run_id``,
``code_version``, ``created_at``):

- ``class_centers_iou``: generator, segmenter, method (``"class-centers"``), analysis_key,
  class_index, class_name, iou (fraction, NaN where never counted), images (evaluation images
  in which the class counted), n_images (training images used), resolution. Background
  (class 0) is not listed (ignored by Appx A).
- ``class_centers_summary``: generator, segmenter, method, analysis_key, miou, lse_miou (the
  LSE mIoU of Table 1, filled in by :func:`summarize`; NaN without it), miou_detected (on the
  evaluation images the segmenter's detector labelled), n_images, n_eval, n_eval_detected,
  resolution, feature_dim.
- ``class_centers``: generator, segmenter, analysis_key, class_index, class_name, n_pixels
  (training pixels of the class at ``resolution``), center (list<float>: the unit center,
  empty when the class had no pixel), resolution.

Figure ``fig4-<profile>-<key8>.png``: image | segmenter label | class-center segmentation for the
first ``figure_samples`` evaluation images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from lineargan.analyses.geometry import (
    ClassSumAccumulator,
    feature_dim,
    image_batches,
    labels_at,
    resolve_resolution,
    segment_by_centers,
    unit_pixel_features,
)
from lineargan.device import resolve_device
from lineargan.figures import comparison_grid
from lineargan.metrics import IoUResult, SubsetIoU
from storage.feature_store import FeatureStore
from storage.tables import CLASS_IOU, MODELS, schema
from tasks.analyses.class_centers.science import ClassCentersParams
from tasks.analyses.contract import Inputs, Output, unchanged
from tasks.run_context import RunContext

IOU_TABLE = "class_centers_iou"
SUMMARY_TABLE = "class_centers_summary"
CENTERS_TABLE = "class_centers"
METHOD = "class-centers"

TABLES = {
    IOU_TABLE: schema(
        **MODELS,
        method=pa.string(),
        analysis_key=pa.string(),
        **CLASS_IOU,
        n_images=pa.int64(),
        resolution=pa.int64(),
    ),
    SUMMARY_TABLE: schema(
        **MODELS,
        method=pa.string(),
        analysis_key=pa.string(),
        miou=pa.float64(),
        lse_miou=pa.float64(),
        miou_detected=pa.float64(),
        n_images=pa.int64(),
        n_eval=pa.int64(),
        n_eval_detected=pa.int64(),
        resolution=pa.int64(),
        feature_dim=pa.int64(),
    ),
    CENTERS_TABLE: schema(
        **MODELS,
        analysis_key=pa.string(),
        class_index=pa.int64(),
        class_name=pa.string(),
        n_pixels=pa.int64(),
        center=pa.list_(pa.float64()),
        resolution=pa.int64(),
    ),
}


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
) -> tuple[dict[str, IoUResult], dict[str, np.ndarray]]:
    """IoU (Appx A) of nearest-center segmentation over the whole store and over its detected
    images (``{"all": ..., "detected": ...}``), and the first ``figure_samples`` images with
    their labels and predictions for the figure."""
    spec = store.spec
    acc = SubsetIoU(spec.class_names)
    fig: dict[str, np.ndarray] = {}
    for i in range(spec.n_chunks):
        chunk = store.read_chunk(i, features=True, images=(i == 0 and figure_samples > 0))
        preds = []
        for sl in image_batches(len(chunk.labels)):
            unit = unit_pixel_features([f[sl] for f in chunk.features], size, device)
            pred = segment_by_centers(unit, centers, present, spec.resolution)
            acc.update(pred, chunk.labels[sl], chunk.detected[sl])
            if i == 0 and sl.start < figure_samples:
                preds.append(pred.cpu().numpy())
        if i == 0 and figure_samples > 0:
            k = min(figure_samples, len(chunk.labels))
            fig = {
                "images": chunk.images[:k],
                "labels": chunk.labels[:k],
                "preds": np.concatenate(preds)[:k],
            }
    return acc.results(), fig


def compute(ctx: RunContext, params: ClassCentersParams, inputs: Inputs) -> Output:
    """Class centers from the training store, nearest-center segmentation of the evaluation
    store (Table 1's LSE mIoU is added by :func:`summarize`, so this never waits for it)."""
    train, evals = inputs.train, inputs.evals
    spec = train.spec
    size = resolve_resolution(spec.layer_shapes, spec.resolution, params.resolution)
    dev = resolve_device(ctx.device)

    sums, used = accumulate_class_sums(train, params.n_images, size, dev)
    centers, present = sums.centers()
    results, fig = segment_store(evals, centers, present, size, dev, params.figure_samples)
    result = results["all"]

    base = {"generator": spec.generator, "segmenter": spec.segmenter}
    iou = pd.DataFrame(
        {
            **base,
            "method": METHOD,
            "class_index": range(len(spec.class_names)),
            "class_name": list(spec.class_names),
            "iou": result.iou,
            "images": result.images,
            "n_images": used,
            "resolution": size,
        }
    )
    iou = iou[iou.class_index != 0].reset_index(drop=True)  # background ignored (Appx A)
    summary = pd.DataFrame(
        [
            {
                **base,
                "method": METHOD,
                "miou": result.miou,
                "lse_miou": float("nan"),
                "miou_detected": results["detected"].miou,
                "n_images": used,
                "n_eval": evals.spec.n,
                "n_eval_detected": evals.n_detected(),
                "resolution": size,
                "feature_dim": feature_dim(spec.layer_shapes),
            }
        ]
    )
    present_np = present.cpu().numpy()
    centers_df = pd.DataFrame(
        {
            **base,
            "class_index": range(len(spec.class_names)),
            "class_name": list(spec.class_names),
            "n_pixels": sums.counts.cpu().numpy().astype(np.int64),
            "center": [
                [float(v) for v in c] if ok else []
                for c, ok in zip(centers.cpu().numpy(), present_np, strict=True)
            ],
            "resolution": size,
        }
    )
    frames = {IOU_TABLE: iou, SUMMARY_TABLE: summary, CENTERS_TABLE: centers_df}
    figures = {}
    if fig:
        figures["fig4"] = comparison_grid(
            fig["images"],
            {"segmenter": fig["labels"], "class centers": fig["preds"]},
            spec.class_names,
        )
    return Output(tables=frames, figures=figures)


def summarize(params: ClassCentersParams, read, reference: dict) -> dict[str, pd.DataFrame]:
    """Put Table 1's LSE mIoU (``reference["LSE"]``) beside the class centers' own."""
    lse = reference.get("LSE")
    summary = read(SUMMARY_TABLE)
    if unchanged(float(summary["lse_miou"].iloc[0]), lse):
        return {}
    summary["lse_miou"] = float("nan") if lse is None else float(lse)
    return {SUMMARY_TABLE: summary}

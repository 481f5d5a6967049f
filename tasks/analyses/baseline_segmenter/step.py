"""Baseline segmenter analysis: how well the UNet that SCS/SIE back-propagate through agrees
with the reference segmenter on the evaluation split.

The UNet is trained (or reused) through :func:`tasks.baseline.unet_or_reuse` on the training
store's images and labels, then scored against the evaluation store's reference labels on all
images and on those where the reference's detector fired. Its mIoU bounds what SCS can show:
a sample SCS conditioned on a mask is judged by this UNet.

Table (every row also has ``profile``, ``run_id``, ``code_version``, ``created_at``):

- ``baseline_segmenter`` (one row per class but background; part key = the analysis key):
  generator, segmenter (the reference), class_index, class_name, iou, images, iou_detected,
  images_detected (fractions; NaN and 0 where the class never counted), miou, miou_detected,
  n_train (images trained on), n_holdout (the training store's last images it did not train
  on), miou_holdout / miou_holdout_detected (its mIoU on them: what its settings are chosen
  on; NaN with no held-out part), n_eval, n_eval_detected, iterations, train_seconds,
  final_loss, fit_dir, key.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from lineargan.baseline import UNetParams
from storage.tables import CLASS_IOU, MODELS, schema
from tasks.analyses.contract import Inputs, Output
from tasks.baseline import evaluate_segmenter, unet_or_reuse
from tasks.run_context import RunContext

TABLE = "baseline_segmenter"

TABLES = {
    TABLE: schema(
        **MODELS,
        **CLASS_IOU,
        iou_detected=pa.float64(),
        images_detected=pa.int64(),
        miou=pa.float64(),
        miou_detected=pa.float64(),
        n_train=pa.int64(),
        n_holdout=pa.int64(),
        miou_holdout=pa.float64(),
        miou_holdout_detected=pa.float64(),
        n_eval=pa.int64(),
        n_eval_detected=pa.int64(),
        iterations=pa.int64(),
        train_seconds=pa.float64(),
        final_loss=pa.float64(),
        fit_dir=pa.string(),
        key=pa.string(),
    )
}


def compute(ctx: RunContext, params: UNetParams, inputs: Inputs) -> Output:
    """Train or reuse the baseline UNet and its per-class IoU on the evaluation split."""
    train, evals = inputs.train, inputs.evals
    segmenter, meta = unet_or_reuse(train, ctx.train_url, params, ctx.results_root, ctx.device)
    results = evaluate_segmenter(segmenter, evals, ctx.device)
    every, detected = results["all"], results["detected"]
    shared = {
        "generator": evals.spec.generator,
        "segmenter": evals.spec.segmenter,
        "miou": every.miou,
        "miou_detected": detected.miou,
        "n_train": int(meta["n_train"]),
        "n_holdout": train.spec.n - int(meta["n_train"]),
        "miou_holdout": float(meta.get("holdout_miou", float("nan"))),
        "miou_holdout_detected": float(meta.get("holdout_miou_detected", float("nan"))),
        "n_eval": evals.spec.n,
        "n_eval_detected": evals.n_detected(),
        "iterations": int(meta["iterations"]),
        "train_seconds": float(meta["train_seconds"]),
        "final_loss": float(meta["final_loss"]),
        "fit_dir": meta["fit_dir"],
    }
    rows = pd.DataFrame(
        [
            {
                "class_index": c,
                "class_name": every.class_names[c],
                "iou": float(every.iou[c]),
                "images": int(every.images[c]),
                "iou_detected": float(detected.iou[c]),
                "images_detected": int(detected.images[c]),
                **shared,
            }
            for c in range(1, len(every.class_names))  # background ignored (Appx A)
        ]
    )
    return Output(tables={TABLE: rows}, fits=[meta["fit_dir"]])

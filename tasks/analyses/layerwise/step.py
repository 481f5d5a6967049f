"""Layer-wise analysis (Appx I, Eq. 8, Fig 10): what each generator layer alone segments.

An LSE is trained on the training store with the profile's full schedule and the extra
per-layer loss of Eq. 8, L = CE(S, Y) + Σ_i α·CE(u↑(S_i), Y) with α = 0.1 (via
:func:`tasks.fit.fit_or_reuse` with ``layer_loss_weight=α``), checkpointed under
``<results_root>/fits/layerwise-<key16>``.
On the evaluation store, each layer's own prediction argmax u↑(S_i) and the full sum are scored
with the Appx A IoU in one pass.

Tables (every row also has ``profile``, ``run_id``, ``code_version``, ``created_at``):

- ``layerwise`` (part key = analysis key): generator, segmenter, alpha, layer_index (0-based
  generator order; -1 for the sum), layer_name (``spec.layer_names``; "all" for the sum),
  class_index, class_name, iou (fraction, NaN where the class never counted), images, key.
  Background is left out (Appx A).
- ``layerwise_summary``: generator, segmenter, alpha, layer_index, layer_name, layer_size
  (feature-map side h; the output resolution for "all"), miou, miou_detected (on the
  evaluation images the segmenter's detector labelled), iterations, n_train, n_eval,
  n_eval_detected, key.

Figures: ``figures/layerwise-<profile>-<key8>.png`` (mIoU by layer, the sum as a dashed line) and
``figures/layerwise-seg-<profile>-<key8>.png`` (Fig 10 style: image, segmenter label, each layer's
prediction and the sum for the first evaluation images).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
from torch import nn

from lineargan.config import FitConfig
from lineargan.device import resolve_device
from lineargan.evaluate import evaluate_subsets, predict
from lineargan.extractors.base import LayerView
from lineargan.figures import comparison_grid, layer_miou_plot
from storage.checkpoints import load_extractor
from storage.tables import CLASS_IOU, MODELS, schema
from tasks.analyses.contract import Inputs, Output
from tasks.analyses.layerwise.science import LayerwiseParams
from tasks.fit import FitJob, fit_or_reuse
from tasks.run_context import RunContext

NAME = "layerwise"
TABLE = "layerwise"
SUMMARY_TABLE = "layerwise_summary"
ALL = "all"

_COMMON = {
    **MODELS,
    "alpha": pa.float64(),
    "layer_index": pa.int64(),
    "layer_name": pa.string(),
}
TABLES = {
    TABLE: schema(
        **_COMMON,
        **CLASS_IOU,
        key=pa.string(),
    ),
    SUMMARY_TABLE: schema(
        **_COMMON,
        layer_size=pa.int64(),
        miou=pa.float64(),
        miou_detected=pa.float64(),
        iterations=pa.int64(),
        n_train=pa.int64(),
        n_eval=pa.int64(),
        n_eval_detected=pa.int64(),
        key=pa.string(),
    ),
}


def compute(ctx: RunContext, params: LayerwiseParams, inputs: Inputs) -> Output:
    """Train the Eq. 8 LSE, score every layer alone and the sum; tables and figures."""
    train, evals = inputs.train, inputs.evals
    spec = evals.spec
    dev = resolve_device(ctx.device)
    job = FitJob(
        cfg=FitConfig(extractor="LSE", schedule=params.schedule, seed=params.seed),
        prefix=NAME,
        class_names=train.spec.class_names,
        key_extra={"alpha": params.alpha},
        fit_kwargs={"layer_loss_weight": params.alpha},
        metadata={"alpha": params.alpha},
    )
    fit_meta = fit_or_reuse(train, ctx.train_url, job, ctx.results_root, device=ctx.device)
    model, _ = load_extractor(fit_meta["fit_dir"], dev)
    n_layers = len(spec.layer_names)
    views: list[nn.Module] = [LayerView(model, i) for i in range(n_layers)] + [model]
    chunks = ((c.features, c.labels, c.detected) for _, c in evals.iter_chunks())
    subsets = evaluate_subsets(views, chunks, spec.class_names, spec.resolution, dev)
    results = [r["all"] for r in subsets]
    n_detected = evals.n_detected()

    indices = list(range(n_layers)) + [-1]
    names = list(spec.layer_names) + [ALL]
    sizes = [s[1] for s in spec.layer_shapes] + [spec.resolution]
    common = {"generator": spec.generator, "segmenter": spec.segmenter, "alpha": params.alpha}
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
                "miou": sub["all"].miou,
                "miou_detected": sub["detected"].miou,
                "iterations": int(fit_meta["iterations"]),
                "n_train": train.spec.n,
                "n_eval": spec.n,
                "n_eval_detected": n_detected,
            }
            for i, name, size, sub in zip(indices, names, sizes, subsets, strict=True)
        ]
    )
    title = f"Layer-wise mIoU, {spec.generator} / {spec.segmenter} (alpha={params.alpha:g})"
    figures = {"layerwise": layer_miou_plot(summary, title)}
    chunk = evals.read_chunk(0, features=True, images=True)
    k = min(params.figure_samples, len(chunk.labels))
    feats = [f[:k] for f in chunk.features]
    seg_rows = {"segmenter": chunk.labels[:k]}
    for name, view in zip(names, views, strict=True):
        seg_rows[name] = predict(view, feats, spec.resolution, dev)
    figures["layerwise-seg"] = comparison_grid(chunk.images[:k], seg_rows, spec.class_names)
    return Output(
        tables={TABLE: rows, SUMMARY_TABLE: summary}, figures=figures, fits=[fit_meta["fit_dir"]]
    )

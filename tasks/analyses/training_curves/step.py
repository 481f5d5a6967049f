"""Fig 8 (Appx D): every Table 1 fit scored at its snapshots and at its end.

Table 1's fits (:func:`tasks.fit.table1_job`) keep their weights after steps 1, 2, 4, 8, ...
in ``<fit_dir>/snapshots/`` (:class:`storage.checkpoints.FitSnapshots`). This step takes the
fits Table 1 handed over (``Needs.fits``; fitted here when the analysis runs alone, exactly as
Table 1 would), loads each snapshot and scores them with Appx A's IoU in one pass over the
chosen split per fit (:func:`lineargan.evaluate.evaluate_subsets`). The returned weights are
scored in the same pass, except on Table 1's own images (the whole evaluation split), where
their rows are Table 1's evaluation itself (:func:`tasks.evaluate.evaluate_fit` reuses its
parts): the curve ends exactly on Table 1's number and nothing is evaluated twice. A fit
finished before fits kept snapshots is trained again, with snapshots, into a directory of its
own (``fits/<label>-snapshots-<key16>``): the same seed and data, so the same final weights.

Tables (every row also has ``profile``, ``run_id``, ``code_version``, ``created_at``):

- ``training_curve`` (part key = the analysis key): generator, segmenter, fit_label, extractor,
  method, fit_key, split, point ("snapshot": the weights after ``iteration`` steps; "final": the
  weights the fit returned after ``iteration`` steps, which for a plateau-stopped NSE are its
  best held-out ones), iteration, subset ("all" images, or those the segmenter's detector
  "detected"), class_index, class_name, iou (fraction, NaN where the class never counted),
  images, key. Background is left out (Appx A).
- ``training_curve_summary``: generator, segmenter, fit_label, extractor, method, fit_key,
  split, point, iteration, iterations (steps the fit ran), miou, miou_detected, n_images,
  n_images_detected, key. On the evaluation split the "final" row's miou is Table 1's.

Figure: ``figures/training-curves-<profile>-<key8>`` (mIoU against the step, log scale, one
panel per fit method, one line per extractor, the returned weights as a star).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from lineargan.config import FitConfig, fit_label
from lineargan.device import resolve_device
from lineargan.driver import snapshot_points
from lineargan.evaluate import evaluate_subsets
from lineargan.extractors.base import SemanticExtractor
from lineargan.figures import training_curves_plot
from lineargan.render import miou_from_rows
from storage.checkpoints import FitSnapshots, load_extractor
from storage.feature_store import FeatureStore
from storage.tables import CLASS_IOU, MODELS, schema
from tasks.analyses.contract import Inputs, Output
from tasks.analyses.table1.science import table1_summary
from tasks.analyses.training_curves.science import TrainingCurvesParams, first_images
from tasks.evaluate import evaluate_fit
from tasks.fit import fit_extractor, fit_or_reuse, table1_job
from tasks.run_context import RunContext

TABLE = "training_curve"
SUMMARY_TABLE = "training_curve_summary"
# Model bytes scored in one pass over the images: a fit's snapshots all go in one pass (one
# read of the store) unless they are large (a paper-size NSE-2 is ~200 MB each).
PASS_BYTES = 2 << 30

_FIT = {
    **MODELS,
    "fit_label": pa.string(),
    "extractor": pa.string(),
    "method": pa.string(),
    "fit_key": pa.string(),
    "split": pa.string(),
    "point": pa.string(),
    "iteration": pa.int64(),
}
TABLES = {
    TABLE: schema(**_FIT, subset=pa.string(), **CLASS_IOU, key=pa.string()),
    SUMMARY_TABLE: schema(
        **_FIT,
        iterations=pa.int64(),
        miou=pa.float64(),
        miou_detected=pa.float64(),
        n_images=pa.int64(),
        n_images_detected=pa.int64(),
        key=pa.string(),
    ),
}


def snapshotted_fit(ctx: RunContext, cfg: FitConfig, inputs: Inputs) -> dict:
    """Table 1's fit of ``cfg`` (handed over by the DAG, else fitted or reused here) with every
    snapshot its steps call for; a fit finished before fits kept snapshots is trained again
    with them, into its own directory."""
    meta = inputs.fits.get(fit_label(cfg.extractor, cfg.method))
    if meta is None or meta.get("fit_config") != cfg.model_dump(mode="json"):
        meta = fit_extractor(ctx.train_url, cfg, ctx.results_root, ctx.device)
    snapshots = FitSnapshots(meta["fit_dir"])
    if all(snapshots.has(i) for i in snapshot_points(int(meta["iterations"]))):
        return meta
    job = table1_job(cfg, tuple(meta["class_names"]))
    job = replace(job, prefix=f"{job.prefix}-snapshots", key_extra={"snapshots": True})
    return fit_or_reuse(inputs.train, ctx.train_url, job, ctx.results_root, device=ctx.device)


def _model_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def score_fit(
    meta: dict,
    store: FeatureStore,
    params: TrainingCurvesParams,
    dev: torch.device,
    returned: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Per-class IoU rows of every snapshot of one fit and of its returned weights, on the
    first ``params.max_images`` images of ``store``. ``returned``: the returned weights'
    per-class rows by subset when Table 1 has them already (its ``iou_per_class`` parts, on
    the same images), taken as they are instead of evaluated again."""
    spec = store.spec
    snapshots = FitSnapshots(meta["fit_dir"])
    iterations = int(meta["iterations"])
    points = [("snapshot", i) for i in snapshot_points(iterations)]
    if returned is None:
        points.append(("final", iterations))
    fit = {
        "generator": spec.generator,
        "segmenter": spec.segmenter,
        "fit_label": fit_label(meta["extractor"], meta["method"]),
        "extractor": meta["extractor"],
        "method": meta["method"],
        "fit_key": meta["fit_key"],
        "split": params.split,
    }
    rows = []

    def add(point: str, iteration: int, subset: str, iou, images) -> None:
        rows.extend(
            {
                **fit,
                "point": point,
                "iteration": iteration,
                "subset": subset,
                "class_index": c,
                "class_name": spec.class_names[c],
                "iou": float(iou[c]),
                "images": int(images[c]),
            }
            for c in range(1, len(spec.class_names))  # background ignored (Appx A)
        )

    def load(point: str, iteration: int) -> SemanticExtractor:
        if point == "final":
            return load_extractor(meta["fit_dir"], dev)[0]
        return snapshots.load(iteration, dev)

    loaded = [load(*points[0])] if points else []
    per_pass = max(1, PASS_BYTES // max(_model_bytes(loaded[0]), 1)) if loaded else 1
    for start in range(0, len(points), per_pass):
        group = points[start : start + per_pass]
        models = [loaded.pop() if loaded else load(*point) for point in group]
        chunks = ((c.features, c.labels, c.detected) for _, c in store.iter_chunks())
        results = evaluate_subsets(
            models, first_images(chunks, params.max_images), spec.class_names, spec.resolution, dev
        )
        for (point, iteration), by_subset in zip(group, results, strict=True):
            for subset, res in by_subset.items():
                add(point, iteration, subset, res.iou, res.images)
    for subset, df in (returned or {}).items():
        iou, images = np.full(len(spec.class_names), np.nan), np.zeros(len(spec.class_names))
        iou[df["class_index"]], images[df["class_index"]] = df["iou"], df["images"]
        add("final", iterations, subset, iou, images)
    return pd.DataFrame(rows)


def summarize_curves(
    rows: pd.DataFrame, iterations: dict[str, int], n_images: int, n_detected: int
) -> pd.DataFrame:
    """One row per (fit, point): mIoU on all images and on the detected ones, computed from
    the per-class rows by Table 1's own code (its summary for the mIoU,
    :func:`lineargan.render.miou_from_rows` for the detected-only mIoU), so on Table 1's
    images the returned weights' numbers are Table 1's to the last bit."""
    keys = list(_FIT)
    out = []
    for values, group in rows.groupby(keys, sort=False):
        by_subset = dict(tuple(group.groupby("subset")))
        summary = table1_summary(by_subset["all"])
        detected = by_subset.get("detected")
        out.append(
            {
                **dict(zip(keys, values, strict=True)),
                "iterations": iterations[values[keys.index("fit_label")]],
                "miou": summary["miou"].iloc[0] if len(summary) else np.nan,
                "miou_detected": np.nan if detected is None else miou_from_rows(detected),
                "n_images": n_images,
                "n_images_detected": n_detected,
            }
        )
    return pd.DataFrame(out)


def compute(ctx: RunContext, params: TrainingCurvesParams, inputs: Inputs) -> Output:
    """Score every snapshot of Table 1's fits on the chosen split; tables and the figure."""
    store = inputs.evals if params.split == "eval" else inputs.train
    spec = store.spec
    dev = resolve_device(ctx.device)
    metas = [snapshotted_fit(ctx, cfg, inputs) for cfg in params.fits]
    n_images = spec.n if params.max_images is None else min(params.max_images, spec.n)
    table1_images = params.split == "eval" and n_images == spec.n

    def score(meta: dict) -> pd.DataFrame:
        # on Table 1's images the returned weights' rows are Table 1's evaluation (reused)
        returned = (
            evaluate_fit(meta, ctx.eval_url, ctx.results_root, ctx.profile, ctx.run_id, ctx.device)
            if table1_images
            else None
        )
        return score_fit(meta, store, params, dev, returned)

    frames = []
    for meta in metas:
        label = fit_label(meta["extractor"], meta["method"])
        # one unit per fit: a killed run resumes after the fits it has scored
        rows, _ = inputs.units.load_or_compute(label.replace(":", "-"), lambda m=meta: score(m))
        frames.append(rows)
    rows = pd.concat(frames, ignore_index=True)
    n_detected = int(store.detected_flags()[:n_images].sum())
    iterations = {fit_label(m["extractor"], m["method"]): int(m["iterations"]) for m in metas}
    summary = summarize_curves(rows, iterations, n_images, n_detected)
    images = "evaluation" if params.split == "eval" else "training"
    title = (
        f"mIoU during training, {spec.generator} / {spec.segmenter} ({n_images} {images} images)"
    )
    return Output(
        tables={TABLE: rows, SUMMARY_TABLE: summary},
        figures={"training-curves": training_curves_plot(summary, title)},
        fits=[m["fit_dir"] for m in metas],
    )

"""Category selection (Appx E, Tables 4 and 5): train on all classes, keep, retrain, compare.

Round 1 ("all") is Table 1: the reproduce DAG hands this analysis Table 1's fits (``Needs.fits``)
and it reuses every one whose ``FitConfig`` matches its own; a fit it does not get (other
overrides, or a run of this analysis alone) goes through :func:`tasks.fit.fit_extractor`.
A class is kept when any extractor's round-1 IoU on the evaluation store is strictly above
``threshold`` (background is always kept). Round 2 ("selected") retrains every extractor on the
kept classes only, with labels remapped by :func:`~tasks.analyses.category_selection.science.build_lut`
(dropped classes → background by default, see that module), and evaluates it on the evaluation
store remapped the same way. Round-2 checkpoints live under
``fits/<extractor>-sel-<key16>`` keyed by the fit config, the training store, the kept classes
and ``dropped_as`` (:func:`tasks.fit.fit_or_reuse`), and are reused when finished.

Tables (long format; every row also carries ``profile``, ``run_id``, ``code_version``,
``created_at``; one Parquet part per analysis key):

- ``category_selection``: generator, segmenter, round ("all" | "selected"), extractor, fit_key,
  class_index (original segmenter index), new_index (index in the retrained extractor, -1 when
  dropped), class_name, iou (fraction, NaN where the class never counted), images (evaluation
  images in which it counted), kept (bool), threshold, dropped_as. Round "all" has a row for
  every non-background class; round "selected" only for the kept non-background classes.
- ``category_selection_summary``: generator, segmenter, round, extractor, fit_key, miou (mean
  IoU over the kept non-background classes that counted: Table 4 reports both rounds "on the
  final selected categories"), rel_diff ((y − y*) / y* against the best extractor of the same
  round), miou_detected (the same on the evaluation images the segmenter's detector labelled),
  n_kept and n_total (classes kept / of the segmenter, background included; a round-2
  extractor has ``n_kept`` output classes), threshold, dropped_as, iterations, fit_reused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from lineargan.config import FitConfig
from lineargan.device import resolve_device
from lineargan.errors import LinearGanError
from storage.checkpoints import load_extractor
from storage.feature_store import FeatureStore
from storage.stream import ChunkStream
from storage.tables import CLASS_IOU, MODELS, schema
from tasks.analyses.category_selection.science import (
    IGNORE_LABEL,
    CategorySelectionParams,
    RemappedSource,
    build_lut,
    evaluate_remapped,
    select_classes,
)
from tasks.analyses.contract import Inputs, Output
from tasks.evaluate import evaluate_fit
from tasks.fit import FitJob, fit_extractor, fit_or_reuse
from tasks.run_context import RunContext

TABLE = "category_selection"
SUMMARY_TABLE = "category_selection_summary"

_COMMON = {
    **MODELS,
    "round": pa.string(),
    "extractor": pa.string(),
    "fit_key": pa.string(),
}
TABLES = {
    TABLE: schema(
        **_COMMON,
        **CLASS_IOU,
        new_index=pa.int64(),
        kept=pa.bool_(),
        threshold=pa.float64(),
        dropped_as=pa.string(),
    ),
    SUMMARY_TABLE: schema(
        **_COMMON,
        miou=pa.float64(),
        rel_diff=pa.float64(),
        miou_detected=pa.float64(),
        n_kept=pa.int64(),
        n_total=pa.int64(),
        threshold=pa.float64(),
        dropped_as=pa.string(),
        iterations=pa.int64(),
        fit_reused=pa.bool_(),
    ),
}


def fit_selected(
    store: FeatureStore,
    train_url: str,
    cfg: FitConfig,
    kept: list[int],
    dropped_as: str,
    results_root: str,
    device: str = "auto",
) -> dict:
    """Train (or reuse) ``cfg.extractor`` on the kept classes of ``store``; returns its metadata."""
    spec = store.spec
    kept = [int(c) for c in kept]
    lut = build_lut(kept, len(spec.class_names), dropped_as)
    job = FitJob(
        cfg=cfg,
        prefix=f"{cfg.extractor}-sel",
        class_names=tuple(spec.class_names[c] for c in kept),
        key_extra={"kept_classes": kept, "dropped_as": dropped_as},
        fit_kwargs={"ignore_index": IGNORE_LABEL} if dropped_as == "ignore" else {},
        metadata={
            "kept_classes": kept,
            "original_class_names": list(spec.class_names),
            "dropped_as": dropped_as,
        },
    )
    return fit_or_reuse(
        store,
        train_url,
        job,
        results_root,
        source=lambda: RemappedSource(ChunkStream(store, seed=cfg.seed), lut),
        device=device,
    )


def _full_iou(df: pd.DataFrame, n_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (iou, images) arrays over all classes from ``iou_per_class`` rows."""
    iou = np.full(n_class, np.nan)
    images = np.zeros(n_class, dtype=np.int64)
    idx = df["class_index"].to_numpy(dtype=np.int64)
    iou[idx] = df["iou"].to_numpy(dtype=np.float64)
    images[idx] = df["images"].to_numpy(dtype=np.int64)
    return iou, images


def _miou(iou: np.ndarray, images: np.ndarray, classes: list[int]) -> float:
    vals = [iou[c] for c in classes if c != 0 and images[c] > 0]
    return float(np.mean(vals)) if vals else float("nan")


def _round1_fit(ctx: RunContext, cfg: FitConfig, given: dict[str, dict]) -> dict:
    """Table 1's fit of ``cfg`` when the DAG handed it over, else fit (or reuse) it here."""
    meta = given.get(cfg.extractor)
    if meta is not None and meta.get("fit_config") == cfg.model_dump(mode="json"):
        return {**meta, "reused": True}  # trained by Table 1, not by this analysis
    return fit_extractor(ctx.train_url, cfg, ctx.results_root, ctx.device)


def compute(ctx: RunContext, params: CategorySelectionParams, inputs: Inputs) -> Output:
    """Appx E on ``ctx``'s stores: round 1 on all classes, selection, round 2 on the kept ones."""
    train, evals = inputs.train, inputs.evals
    spec = evals.spec
    names = list(spec.class_names)
    n_class = len(names)

    # Round 1: all classes (Table 1's fits and evaluations, reused when present).
    round1: dict[str, dict] = {}
    for cfg in params.fits:
        meta = _round1_fit(ctx, cfg, inputs.fits)
        dfs = evaluate_fit(
            meta, ctx.eval_url, ctx.results_root, ctx.profile, ctx.run_id, ctx.device
        )
        round1[cfg.extractor] = {
            "meta": meta,
            **{subset: _full_iou(df, n_class) for subset, df in dfs.items()},
        }

    kept = select_classes({e: r["all"][0] for e, r in round1.items()}, params.threshold)
    if len(kept) < 2:
        best = max(np.nanmax(np.nan_to_num(r["all"][0][1:], nan=0.0)) for r in round1.values())
        raise LinearGanError(
            f"no class reaches IoU > {params.threshold:.2f} for any extractor (best: {best:.3f}), "
            "so there is nothing to retrain on",
            "lower the threshold or train longer (a larger profile)",
        )
    new_index = {c: i for i, c in enumerate(kept)}
    lut = build_lut(kept, n_class, params.dropped_as)

    # Round 2: retrain on the kept classes, evaluate against remapped labels. When every class
    # is kept the LUT is the identity and the fit config, data and seed are round 1's, so the
    # retrain would reproduce round 1 exactly: reuse it instead of paying for it twice.
    dev = resolve_device(ctx.device)
    round2: dict[str, dict] = {}
    if len(kept) == n_class:
        round2 = {ext: {**r, "meta": {**r["meta"], "reused": True}} for ext, r in round1.items()}
    fits_to_train = () if round2 else params.fits
    for cfg in fits_to_train:
        meta = fit_selected(
            train, ctx.train_url, cfg, kept, params.dropped_as, ctx.results_root, ctx.device
        )
        model, _ = load_extractor(meta["fit_dir"], dev)
        chunks = ((c.features, c.labels, c.detected) for _, c in evals.iter_chunks())
        res = evaluate_remapped(model, chunks, lut, [names[c] for c in kept], spec.resolution, dev)
        round2[cfg.extractor] = {"meta": meta}
        for subset, r in res.items():  # back to the original class indices
            iou, images = np.full(n_class, np.nan), np.zeros(n_class, dtype=np.int64)
            iou[kept], images[kept] = r.iou, r.images
            round2[cfg.extractor][subset] = (iou, images)

    common = {"generator": spec.generator, "segmenter": spec.segmenter}
    rows, summary = [], []
    for round_name, results in (("all", round1), ("selected", round2)):
        classes = range(1, n_class) if round_name == "all" else kept[1:]
        for ext, r in results.items():
            for c in classes:
                rows.append(
                    {
                        **common,
                        "round": round_name,
                        "extractor": ext,
                        "fit_key": r["meta"]["fit_key"],
                        "class_index": c,
                        "new_index": new_index.get(c, -1),
                        "class_name": names[c],
                        "iou": float(r["all"][0][c]),
                        "images": int(r["all"][1][c]),
                        "kept": c in new_index,
                        "threshold": params.threshold,
                        "dropped_as": params.dropped_as,
                    }
                )
            summary.append(
                {
                    **common,
                    "round": round_name,
                    "extractor": ext,
                    "fit_key": r["meta"]["fit_key"],
                    "miou": _miou(*r["all"], kept),
                    "miou_detected": _miou(*r["detected"], kept),
                    "n_kept": len(kept),
                    "n_total": n_class,
                    "threshold": params.threshold,
                    "dropped_as": params.dropped_as,
                    "iterations": int(r["meta"]["iterations"]),
                    "fit_reused": bool(r["meta"].get("reused", False)),
                }
            )
    table = pd.DataFrame(rows)
    summ = pd.DataFrame(summary)
    best = summ.groupby("round")["miou"].transform("max")
    summ.insert(summ.columns.get_loc("miou") + 1, "rel_diff", (summ["miou"] - best) / best)
    fits = sorted({r["meta"]["fit_dir"] for rnd in (round1, round2) for r in rnd.values()})
    return Output(tables={TABLE: table, SUMMARY_TABLE: summ}, fits=fits)

"""Category selection (Appx E, Tables 4 and 5): train on all classes, keep, retrain, compare.

Round 1 ("all") fits every extractor on all of the segmenter's classes through
:func:`lineargan.jobs.fit.fit_extractor` with the very ``FitConfig`` the reproduce flow uses, so
Table 1's checkpoints (and their ``iou_per_class`` evaluations) are reused when they exist.
A class is kept when any extractor's round-1 IoU on the evaluation store is strictly above
``threshold`` (background is always kept). Round 2 ("selected") retrains every extractor on the
kept classes only, with labels remapped by :func:`lineargan.category_selection.build_lut`
(dropped classes → background by default, see that module), and evaluates it on the evaluation
store remapped the same way. Round-2 checkpoints live under
``fits/<extractor>-sel-<key>`` keyed by the fit config, the training store, the kept classes and
``dropped_as``, and are reused when finished.

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
  round), n_kept and n_total (classes kept / of the segmenter, background included; a round-2
  extractor has ``n_kept`` output classes), threshold, dropped_as, iterations, fit_reused.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from lineargan import training
from lineargan.category_selection import (
    IGNORE_LABEL,
    RemappedSource,
    build_lut,
    evaluate_remapped,
    select_classes,
)
from lineargan.config import ALL_EXTRACTORS, FitConfig, Frozen, RunConfig
from lineargan.device import resolve_device
from lineargan.errors import LinearGanError
from lineargan.extractors import build_extractor, load_extractor, save_extractor
from lineargan.jobs.analysis import (
    AnalysisContext,
    AnalysisResult,
    analysis_key,
    load_finished,
    save_finished,
)
from lineargan.jobs.evaluate import evaluate_fit
from lineargan.jobs.fit import fit_extractor, fit_metadata
from lineargan.jobs.models import limit_torch_threads
from lineargan.render import EXTRACTOR_ORDER
from storage.feature_store import FeatureStore
from storage.layout import fit_target
from storage.stream import ChunkStream
from storage.tables import run_metadata, write_table_part

NAME = "category_selection"
TABLE = "category_selection"
SUMMARY_TABLE = "category_selection_summary"


class CategorySelectionParams(Frozen):
    """Appx E: IoU threshold, the fits of both rounds, and what dropped classes become."""

    threshold: float = Field(0.10, ge=0, lt=1, description="keep a class if IoU > threshold")
    fits: tuple[FitConfig, ...] = tuple(FitConfig(extractor=e) for e in ALL_EXTRACTORS)
    dropped_as: Literal["background", "ignore"] = "background"

    @field_validator("fits")
    @classmethod
    def _check_fits(cls, fits: tuple[FitConfig, ...]) -> tuple[FitConfig, ...]:
        names = [f.extractor for f in fits]
        if not names:
            raise ValueError("category selection needs at least one extractor")
        if len(set(names)) != len(names):
            raise ValueError(f"each extractor may appear once, got {names}")
        return fits

    @classmethod
    def for_run(cls, config: RunConfig, **overrides) -> CategorySelectionParams:
        """The fits of the reproduce flow for ``config``, so round 1 reuses Table 1's fits."""
        fits = tuple(config.fit(e) for e in config.extractors)
        return cls(**{"fits": fits, **overrides})

    @classmethod
    def for_profile(cls, profile: str) -> CategorySelectionParams:
        """Threshold 10 %, LSE/NSE-1/NSE-2 with the profile's schedule (as in Table 1)."""
        return cls.for_run(RunConfig(profile=profile))

    @property
    def extractors(self) -> tuple[str, ...]:
        return tuple(f.extractor for f in self.fits)


def selected_fit_key(cfg: FitConfig, train_digest: str, kept: list[int], dropped_as: str) -> str:
    """A round-2 fit: its config, the training store, the kept classes and ``dropped_as``."""
    blob = json.dumps(
        {
            "fit": cfg.model_dump(mode="json"),
            "train": train_digest,
            "kept_classes": [int(c) for c in kept],
            "dropped_as": dropped_as,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _fit_ignore_kwargs(dropped_as: str) -> dict:
    """Arguments that make ``training.fit`` skip ignored pixels (``dropped_as="ignore"``)."""
    if dropped_as != "ignore":
        return {}
    if "ignore_index" not in inspect.signature(training.fit).parameters:
        raise LinearGanError(
            'dropped_as="ignore" needs lineargan.training.fit(..., ignore_index=...), which this '
            "version does not have",
            'use dropped_as="background"',
        )
    return {"ignore_index": IGNORE_LABEL}


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
    key = selected_fit_key(cfg, spec.digest(), kept, dropped_as)
    fit_dir = Path(fit_target(results_root, f"{cfg.extractor}-sel", key).path)
    if (fit_dir / "config.json").exists():
        _, meta = load_extractor(fit_dir)
        return {**meta, "reused": True}
    extra = _fit_ignore_kwargs(dropped_as)
    dev = resolve_device(device)
    kwargs = {} if cfg.extractor == "LSE" or cfg.ksize is None else {"ksize": cfg.ksize}
    torch.manual_seed(cfg.seed)
    model = build_extractor(
        cfg.extractor, n_class=len(kept), dims=[s[0] for s in spec.layer_shapes], **kwargs
    )
    lut = build_lut(kept, len(spec.class_names), dropped_as)
    with RemappedSource(ChunkStream(store, seed=cfg.seed), lut) as source:
        result = training.fit(
            model, source, cfg.schedule, spec.resolution, dev, seed=cfg.seed, **extra
        )
    meta = fit_metadata(
        cfg,
        key,
        fit_dir,
        train_url,
        spec,
        result,
        dev,
        [spec.class_names[c] for c in kept],
        kept_classes=[int(c) for c in kept],
        original_class_names=list(spec.class_names),
        dropped_as=dropped_as,
    )
    save_extractor(model, fit_dir, metadata=meta)
    return {**meta, "reused": False}


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


def run_category_selection(ctx: AnalysisContext, params: CategorySelectionParams) -> AnalysisResult:
    """Appx E on ``ctx``'s stores: round 1 on all classes, selection, round 2 on the kept ones."""
    key = analysis_key(NAME, params, ctx)
    if (done := load_finished(ctx, NAME, key)) is not None:
        return done
    _fit_ignore_kwargs(params.dropped_as)  # fail before any training when "ignore" is unusable
    limit_torch_threads()
    train, evals = ctx.stores()
    spec = evals.spec
    names = list(spec.class_names)
    n_class = len(names)

    # Round 1: all classes (the reproduce flow's fits and evaluations, reused when present).
    round1: dict[str, dict] = {}
    for cfg in params.fits:
        meta = fit_extractor(ctx.train_url, cfg, ctx.results_root, ctx.device)
        df = evaluate_fit(meta, ctx.eval_url, ctx.results_root, ctx.profile, ctx.run_id, ctx.device)
        iou, images = _full_iou(df, n_class)
        round1[cfg.extractor] = {"meta": meta, "iou": iou, "images": images}

    kept = select_classes({e: r["iou"] for e, r in round1.items()}, params.threshold)
    if len(kept) < 2:
        best = max(np.nanmax(np.nan_to_num(r["iou"][1:], nan=0.0)) for r in round1.values())
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
        chunks = ((c.features, c.labels) for _, c in evals.iter_chunks())
        res = evaluate_remapped(model, chunks, lut, [names[c] for c in kept], spec.resolution, dev)
        iou, images = np.full(n_class, np.nan), np.zeros(n_class, dtype=np.int64)
        iou[kept], images[kept] = res.iou, res.images
        round2[cfg.extractor] = {"meta": meta, "iou": iou, "images": images}

    common = {"generator": spec.generator, "segmenter": spec.segmenter}
    meta_cols = run_metadata(ctx.profile, ctx.run_id)
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
                        "iou": float(r["iou"][c]),
                        "images": int(r["images"][c]),
                        "kept": c in new_index,
                        "threshold": params.threshold,
                        "dropped_as": params.dropped_as,
                        **meta_cols,
                    }
                )
            summary.append(
                {
                    **common,
                    "round": round_name,
                    "extractor": ext,
                    "fit_key": r["meta"]["fit_key"],
                    "miou": _miou(r["iou"], r["images"], kept),
                    "n_kept": len(kept),
                    "n_total": n_class,
                    "threshold": params.threshold,
                    "dropped_as": params.dropped_as,
                    "iterations": int(r["meta"]["iterations"]),
                    "fit_reused": bool(r["meta"].get("reused", False)),
                    **meta_cols,
                }
            )
    table = pd.DataFrame(rows)
    summ = pd.DataFrame(summary)
    best = summ.groupby("round")["miou"].transform("max")
    summ.insert(summ.columns.get_loc("miou") + 1, "rel_diff", (summ["miou"] - best) / best)

    tables = {
        TABLE: write_table_part(ctx.results_root, TABLE, key, table),
        SUMMARY_TABLE: write_table_part(ctx.results_root, SUMMARY_TABLE, key, summ),
    }
    md = category_selection_markdown(table, summ, ctx.profile, ctx.run_id)
    return save_finished(ctx, AnalysisResult(name=NAME, key=key, tables=tables, markdown=md))


# -- markdown ---------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "–" if pd.isna(x) else f"{100 * x:.1f}"


def _ordered(extractors) -> list[str]:
    order = {e: i for i, e in enumerate(EXTRACTOR_ORDER)}
    return sorted(dict.fromkeys(extractors), key=lambda e: order.get(e, len(order)))


def category_selection_markdown(
    table: pd.DataFrame, summary: pd.DataFrame, profile: str, run_id: str
) -> str:
    """Table 4 (mIoU of both rounds) and Table 5 (per-class IoU) layouts, in percent."""
    first = summary.iloc[0]
    threshold, n_kept, n_total = first["threshold"], first["n_kept"], first["n_total"]
    dropped_as = first["dropped_as"]
    extractors = _ordered(summary["extractor"])
    fate = "mapped to background" if dropped_as == "background" else "ignored (label 255)"
    lines = [
        f"## Tables 4 & 5 — category selection (Appx E) (profile `{profile}`, run `{run_id}`)",
        "",
        f"Generator `{first['generator']}`, segmenter `{first['segmenter']}`. A class is kept when "
        f"any extractor trained on all classes predicts it with IoU > {100 * threshold:.3g}%; "
        f"kept {n_kept} of {n_total} classes (background included). Dropped classes are "
        f"{fate} when retraining."
        + (
            " Every class was kept, so round 2 is round 1 (same classes, data and seed): its "
            "fits are reused, not retrained."
            if n_kept == n_total
            else ""
        ),
        "",
        "### Table 4 — mIoU (%) on the selected categories",
        "",
        "| extractor | trained on all classes | retrained on selected classes |",
        "|---|---|---|",
    ]
    for ext in extractors:
        cells = []
        for round_name in ("all", "selected"):
            row = summary[(summary["extractor"] == ext) & (summary["round"] == round_name)]
            miou, rel = row["miou"].iloc[0], row["rel_diff"].iloc[0]
            if pd.isna(miou):
                cells.append("–")
            elif rel == 0:
                cells.append(f"**{_pct(miou)}**")
            else:
                cells.append(f"{_pct(miou)} ({100 * rel:+.1f}%)")
        lines.append(f"| {ext} | " + " | ".join(cells) + " |")
    lines += ["", "Best of each round in bold; brackets: difference relative to it (Appx D).", ""]

    kept = table[(table["round"] == "all") & table["kept"]].drop_duplicates("class_index")
    kept = kept.sort_values("class_index")
    lines += [
        "### Table 5 — IoU (%) of each selected category",
        "",
        "Rows 'all': extractors trained on every class (the selection step); rows 'selected': "
        "the same extractors retrained on the selected classes.",
        "",
        "| round | extractor | " + " | ".join(kept["class_name"]) + " |",
        "|---|---|" + "---|" * len(kept),
    ]
    for round_name in ("all", "selected"):
        sub = table[table["round"] == round_name]
        for ext in extractors:
            by_class = sub[sub["extractor"] == ext].set_index("class_index")["iou"]
            cells = [_pct(by_class.get(c, np.nan)) for c in kept["class_index"]]
            lines.append(f"| {round_name} | {ext} | " + " | ".join(cells) + " |")

    dropped = table[(table["round"] == "all") & ~table["kept"]]
    lines += ["", "### Dropped categories (IoU %, trained on all classes)", ""]
    if dropped.empty:
        lines.append("None: every class passed the threshold.")
    else:
        wide = dropped.pivot(
            index=["class_index", "class_name"], columns="extractor", values="iou"
        ).reset_index()
        lines += [
            "| class | " + " | ".join(extractors) + " |",
            "|---|" + "---|" * len(extractors),
        ]
        for _, row in wide.sort_values("class_index").iterrows():
            cells = [_pct(row.get(e, np.nan)) for e in extractors]
            lines.append(f"| {row['class_name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

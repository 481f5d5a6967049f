"""Category selection (Appx E): selection rule, label remapping, and the two-round analysis."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lineargan import training
from lineargan.category_selection import (
    IGNORE_LABEL,
    RemappedSource,
    build_lut,
    evaluate_remapped,
    remap_labels,
    select_classes,
)
from lineargan.config import DatasetConfig, FitConfig, RunConfig, Schedule
from lineargan.errors import LinearGanError
from lineargan.extractors import load_extractor
from lineargan.extractors.base import SemanticExtractor
from lineargan.jobs.analysis import AnalysisContext
from lineargan.jobs.cache import build_store
from lineargan.jobs.category_selection import (
    SUMMARY_TABLE,
    TABLE,
    CategorySelectionParams,
    run_category_selection,
)
from lineargan.jobs.evaluate import evaluate_fit
from lineargan.jobs.fit import fit_extractor
from storage.layout import manifest_target
from storage.stream import ChunkStream
from storage.tables import read_table_part
from tests.conftest import build_synthetic_store, synthetic_spec

TINY = Schedule(phases=((1, 2),), samples_per_epoch=4)  # 2 iterations of batch 2
NAN = float("nan")


# -- the selection rule ------------------------------------------------------------------------


def test_select_any_extractor_strictly_above_threshold():
    iou = {
        "LSE": [NAN, 0.50, 0.10, 0.05, 0.30, NAN],
        "NSE-1": [NAN, 0.40, 0.09, 0.11, 0.10, NAN],
        "NSE-2": [NAN, 0.00, 0.10, 0.02, 0.00, NAN],
    }
    # class 2 is exactly 10 % at best (not strictly above), class 3 passes through NSE-1 only,
    # class 5 never counted (NaN) and is dropped; background is kept although it has no IoU.
    assert select_classes(iou, 0.10) == [0, 1, 3, 4]
    assert select_classes(iou, 0.45) == [0, 1]
    assert select_classes(iou, 0.0) == [0, 1, 2, 3, 4]
    assert select_classes(iou, 0.99) == [0]


def test_select_single_extractor_and_bad_input():
    assert select_classes({"LSE": np.array([0.9, 0.2, 0.3])}, 0.25) == [0, 2]
    with pytest.raises(ValueError):
        select_classes({}, 0.1)
    with pytest.raises(ValueError):
        select_classes({"LSE": [0.1, 0.2], "NSE-1": [0.1, 0.2, 0.3]}, 0.1)


# -- remapping -----------------------------------------------------------------------------------


def test_lut_renumbers_kept_in_order_and_drops_to_background():
    lut = build_lut([4, 1, 6], n_class=7)  # background added, order restored
    assert lut.shape == (256,) and lut.dtype == np.uint8
    assert lut[:7].tolist() == [0, 1, 0, 0, 2, 0, 3]
    assert (lut[7:] == 0).all()
    labels = np.array([[[0, 1, 2], [3, 4, 5]], [[6, 6, 1], [0, 2, 4]]], np.uint8)
    out = remap_labels(labels, lut)
    assert out.dtype == np.uint8
    assert out.tolist() == [[[0, 1, 0], [0, 2, 0]], [[3, 3, 1], [0, 0, 2]]]


def test_lut_ignore_and_validation():
    lut = build_lut([0, 2], n_class=4, dropped_as="ignore")
    assert lut[:4].tolist() == [0, IGNORE_LABEL, 1, IGNORE_LABEL]
    with pytest.raises(ValueError):
        build_lut([0, 4], n_class=4)
    with pytest.raises(ValueError):
        build_lut([0, 1], n_class=4, dropped_as="nothing")
    with pytest.raises(TypeError):
        remap_labels(np.zeros((1, 2, 2), np.int64), lut)


def test_remapped_source_over_a_chunk_stream(tmp_path):
    """Sample k has label k and features k: remapped labels must be lut[features]."""
    store = build_synthetic_store(str(tmp_path / "s.zarr"), synthetic_spec(n=32, chunk_size=8))
    kept = [0, 3, 7, 20, 31]
    lut = build_lut(kept, n_class=32)
    seen = set()
    with RemappedSource(ChunkStream(store, seed=0, buffer_chunks=2), lut) as source:
        for _ in range(6):
            feats, labels = source.next_batch(8)
            ids = feats[0][:, 0, 0, 0].astype(np.int64)
            assert labels.dtype == np.uint8 and labels.shape == (8, 4, 4)
            assert (labels == lut[ids][:, None, None]).all()
            assert [f.shape[1:] for f in feats] == [(2, 2, 2), (3, 4, 4)]
            seen.update(ids.tolist())
        thread = source.source._thread
    assert not thread.is_alive()  # closing the wrapper closed the stream
    assert {lut[i] for i in seen} <= set(range(len(kept)))
    assert len(seen) == 32  # 48 draws over 32 samples in epochs: every sample came by


class FixedPrediction(SemanticExtractor):
    """Predicts a fixed label map (one-hot logits) whatever the features."""

    kind = ""

    def __init__(self, pred: np.ndarray, n_class: int) -> None:
        super().__init__(n_class, [1])
        self.pred = torch.as_tensor(pred).long()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, features, size):
        b = features[0].shape[0]
        one_hot = torch.nn.functional.one_hot(self.pred[:b], self.n_class)
        return one_hot.permute(0, 3, 1, 2).float() + 0 * self.dummy


def test_evaluate_remapped_background_vs_ignore():
    # original classes: 0 bg, 1 kept, 2 dropped. The model (new classes 0/1) predicts class 1
    # on the dropped pixels too: a false positive when they become background, nothing when
    # they are ignored.
    labels = np.array([[[1, 1, 2, 2]]], np.uint8)  # (1, 1, 4)
    pred = np.array([[[1, 0, 1, 1]]], np.uint8)
    model = FixedPrediction(pred, n_class=2)
    feats = [np.zeros((1, 1, 1, 4), np.float16)]
    cpu = torch.device("cpu")
    bg = evaluate_remapped(model, [(feats, labels)], build_lut([1], 3), ["bg", "a"], 4, cpu)
    assert bg.iou[1] == pytest.approx(1 / 4)  # inter 1, union {0, 2, 3}
    ign = evaluate_remapped(
        model, [(feats, labels)], build_lut([1], 3, "ignore"), ["bg", "a"], 4, cpu
    )
    assert ign.iou[1] == pytest.approx(1 / 2)  # dropped pixels excluded: inter 1, union 2
    assert np.isnan(bg.iou[0]) and bg.images[1] == 1


# -- params --------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_for_profile_matches_the_reproduce_fits(profile):
    params = CategorySelectionParams.for_profile(profile)
    run = RunConfig(profile=profile)
    assert params.threshold == 0.10 and params.dropped_as == "background"
    assert params.extractors == ("LSE", "NSE-1", "NSE-2")
    assert params.fits == tuple(run.fit(e) for e in params.extractors)  # same fit keys
    with pytest.raises(ValueError):
        CategorySelectionParams(fits=(FitConfig(), FitConfig()))
    with pytest.raises(ValueError):
        CategorySelectionParams(threshold=1.5)


# -- the analysis on real tiny stores ------------------------------------------------------------


@pytest.fixture(scope="module")
def small_eval_url(data_root, generator, segmenter) -> str:
    """A 32-image evaluation store (keeps six evaluations fast)."""
    cfg = DatasetConfig(split="eval", seed=2, n=32, chunk_size=16)
    return build_store(cfg, str(data_root), device="cpu")


@pytest.fixture(scope="module")
def selection(tmp_path_factory, train_store_url, small_eval_url):
    """Table 1's round-1 fits first, then the selection with a threshold that drops classes."""
    results = str(tmp_path_factory.mktemp("results"))
    ctx = AnalysisContext(train_store_url, small_eval_url, results, "smoke", "run-a", "cpu")
    fits = tuple(FitConfig(extractor=e, schedule=TINY) for e in ("LSE", "NSE-1", "NSE-2"))
    best = np.zeros(7)
    for cfg in fits:  # what the reproduce flow does before this analysis
        meta = fit_extractor(ctx.train_url, cfg, results, "cpu")
        df = evaluate_fit(meta, ctx.eval_url, results, "smoke", "run-a", "cpu")
        best[df["class_index"]] = np.fmax(best[df["class_index"]], df["iou"].to_numpy())
    assert best.max() > 0, "round-1 fits predict no class at all"
    # 0.5 drops every class when tiny fits stay below it: halve the best IoU in that case
    threshold = float(min(0.5, 0.5 * best.max()))
    params = CategorySelectionParams(threshold=threshold, fits=fits)
    result = run_category_selection(ctx, params)
    return ctx, params, result, best


def test_selection_end_to_end(selection):
    ctx, params, result, best = selection
    assert not result.reused
    table = read_table_part(ctx.results_root, TABLE, result.key)
    summ = read_table_part(ctx.results_root, SUMMARY_TABLE, result.key)
    expected_kept = [0] + [c for c in range(1, 7) if best[c] > params.threshold]
    assert 2 <= len(expected_kept) < 7, "the threshold must drop some classes and keep some"

    # round "all": every non-background class per extractor, kept flags follow the rule
    r1 = table[table["round"] == "all"]
    assert len(r1) == 3 * 6
    kept = sorted(r1.loc[r1["kept"], "class_index"].unique().tolist())
    assert [0, *kept] == expected_kept
    max_iou = r1.groupby("class_index")["iou"].max()
    assert ((max_iou > params.threshold) == r1.groupby("class_index")["kept"].first()).all()
    assert list(r1["class_name"].unique()) == ["skin", "eyebrows", "eyes", "nose", "lips", "mouth"]

    # round "selected": only kept classes, renumbered in order, models with n_kept outputs
    r2 = table[table["round"] == "selected"]
    assert sorted(r2["class_index"].unique().tolist()) == kept
    assert r2["kept"].all() and len(r2) == 3 * len(kept)
    new = r2.drop_duplicates("class_index").sort_values("class_index")["new_index"].tolist()
    assert new == list(range(1, len(kept) + 1))
    assert (r1.loc[~r1["kept"], "new_index"] == -1).all()
    assert r2["iou"].between(0, 1).all() and (r2["images"] > 0).all()

    assert len(summ) == 6 and set(summ["round"]) == {"all", "selected"}
    assert (summ["n_kept"] == len(expected_kept)).all() and (summ["n_total"] == 7).all()
    for _, row in summ.iterrows():
        rows = table[(table["round"] == row["round"]) & (table["extractor"] == row["extractor"])]
        rows = rows[rows["kept"] & (rows["images"] > 0)]
        assert row["miou"] == pytest.approx(rows["iou"].mean())
        if row["round"] == "selected":
            model, meta = load_extractor(Path(ctx.results_root) / "fits" / _fit_dir(row))
            assert model.n_class == len(expected_kept)
            assert meta["kept_classes"] == expected_kept
            assert meta["class_names"][0] == "background"
    # round 1 reused Table 1's fits (same FitConfig → same key); round 2 trained fresh
    assert summ.loc[summ["round"] == "all", "fit_reused"].all()
    assert not summ.loc[summ["round"] == "selected", "fit_reused"].any()
    assert summ.groupby("round")["rel_diff"].max().tolist() == [0.0, 0.0]

    md = result.markdown
    assert "Table 4" in md and "Table 5" in md and "IoU > " in md
    assert all(name in md for name in r1["class_name"])
    assert Path(ctx.results_root, "reports", "category_selection-smoke.md").read_text() == md


def _fit_dir(row: pd.Series) -> str:
    return f"{row['extractor'].lower()}-sel-{row['fit_key'][:16]}"


def test_resume_reuses_result_and_fits(selection):
    ctx, params, result, _ = selection
    again = run_category_selection(ctx, params)
    assert again.reused and again.key == result.key and again.tables == result.tables
    assert again.markdown == result.markdown
    # without the manifest the tables are rebuilt, but every fit (both rounds) is reused
    manifest_target(ctx.results_root, f"category_selection-{result.key}").fs.rm(
        manifest_target(ctx.results_root, f"category_selection-{result.key}").path
    )
    redone = run_category_selection(ctx, params)
    assert not redone.reused
    summ = read_table_part(ctx.results_root, SUMMARY_TABLE, result.key)
    assert summ["fit_reused"].all()
    manifest = json.loads(
        manifest_target(ctx.results_root, f"category_selection-{result.key}").read_bytes()
    )
    assert manifest["key"] == result.key


def test_keeping_every_class_reuses_round_one(selection, monkeypatch, tmp_path):
    """All kept → identity LUT, same fits: round 2 must not retrain (on 150 classes it would
    double the cost of the step for nothing)."""
    ctx, params, _, _ = selection
    import lineargan.jobs.category_selection as job

    monkeypatch.setattr(job, "select_classes", lambda iou, threshold: list(range(7)))
    before = sorted(p.name for p in Path(ctx.results_root, "fits").iterdir())
    other = params.model_copy(update={"threshold": 0.0})
    result = run_category_selection(ctx, other)
    after = sorted(p.name for p in Path(ctx.results_root, "fits").iterdir())
    assert after == before, "round 2 trained new fits although nothing was dropped"
    summ = read_table_part(ctx.results_root, SUMMARY_TABLE, result.key)
    keys = summ.pivot(index="extractor", columns="round", values="fit_key")
    assert (keys["all"] == keys["selected"]).all()
    assert (summ["n_kept"] == 7).all() and summ["fit_reused"].all()
    table = read_table_part(ctx.results_root, TABLE, result.key)
    r1, r2 = (
        table[table["round"] == r].set_index(["extractor", "class_index"])
        for r in ("all", "selected")
    )
    assert r2["iou"].equals(r1["iou"])
    assert "round 2 is round 1" in result.markdown


def test_nothing_passes_the_threshold(selection):
    ctx, params, _, best = selection
    strict = params.model_copy(update={"threshold": float(max(best.max(), 0.5) + 0.01)})
    with pytest.raises(LinearGanError, match="lower the threshold"):
        run_category_selection(ctx, strict)


def test_dropped_as_ignore(selection, tmp_path):
    ctx, params, result_bg, _ = selection
    # LSE alone: its own best round-1 IoU sets a threshold that keeps some classes, drops others
    r1 = read_table_part(ctx.results_root, "category_selection", result_bg.key)
    lse_best = r1[(r1["round"] == "all") & (r1["extractor"] == params.fits[0].extractor)][
        "iou"
    ].max()
    ignore = params.model_copy(
        update={"dropped_as": "ignore", "fits": params.fits[:1], "threshold": float(0.5 * lse_best)}
    )
    if "ignore_index" not in inspect.signature(training.fit).parameters:
        fits_before = sorted(p.name for p in Path(ctx.results_root, "fits").iterdir())
        with pytest.raises(LinearGanError, match='dropped_as="background"'):
            run_category_selection(ctx, ignore)
        assert sorted(p.name for p in Path(ctx.results_root, "fits").iterdir()) == fits_before
        return
    result = run_category_selection(ctx, ignore)
    summ = read_table_part(ctx.results_root, SUMMARY_TABLE, result.key)
    assert set(summ["dropped_as"]) == {"ignore"} and len(summ) == 2
    assert "ignored" in result.markdown

"""Category selection (Appx E): selection rule, label remapping, and the two-round analysis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tasks.analyses.category_selection.step as job
from lineargan.config import DatasetConfig, FitConfig, RunConfig, Schedule
from lineargan.errors import LinearGanError
from lineargan.evaluate import predict
from lineargan.extractors.base import SemanticExtractor
from lineargan.metrics import IoUAccumulator
from storage.checkpoints import load_extractor
from storage.feature_store import FeatureStore
from storage.stream import ChunkStream
from storage.tables import read_table_part
from storage.target import Target
from tasks.analyses.category_selection.science import (
    IGNORE_LABEL,
    CategorySelectionParams,
    RemappedSource,
    build_lut,
    evaluate_remapped,
    remap_labels,
    select_classes,
)
from tasks.analyses.category_selection.step import SUMMARY_TABLE, TABLE
from tasks.analyses.runner import run_and_finish
from tasks.cache import build_store
from tasks.evaluate import evaluate_fit
from tasks.fit import fit_extractor
from tasks.run_context import RunContext
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
    # they are ignored. A second, undetected image gets class 1 all wrong.
    labels = np.array([[[1, 1, 2, 2]], [[1, 1, 1, 1]]], np.uint8)  # (2, 1, 4)
    pred = np.array([[[1, 0, 1, 1]], [[0, 0, 0, 0]]], np.uint8)
    model = FixedPrediction(pred, n_class=2)
    feats = [np.zeros((2, 1, 1, 4), np.float16)]
    detected = np.array([True, False])
    cpu = torch.device("cpu")
    chunks = [(feats, labels, detected)]
    bg = evaluate_remapped(model, chunks, build_lut([1], 3), ["bg", "a"], 4, cpu)
    assert bg["detected"].iou[1] == pytest.approx(1 / 4)  # inter 1, union {0, 2, 3}
    assert bg["all"].iou[1] == pytest.approx(1 / 8)  # and 0 on the undetected image
    ign = evaluate_remapped(model, chunks, build_lut([1], 3, "ignore"), ["bg", "a"], 4, cpu)
    assert ign["detected"].iou[1] == pytest.approx(1 / 2)  # dropped pixels excluded
    assert np.isnan(bg["all"].iou[0]) and bg["all"].images[1] == 2
    assert bg["detected"].images[1] == 1
    no_mask = evaluate_remapped(
        model, [(feats, labels, None)], build_lut([1], 3), ["bg", "a"], 4, cpu
    )
    assert set(no_mask) == {"all"}


# -- params --------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_for_run_matches_the_reproduce_fits(profile):
    params = CategorySelectionParams.for_run(RunConfig(profile=profile))
    run = RunConfig(profile=profile)
    assert params.threshold == 0.10 and params.dropped_as == "background"
    assert params.extractors == ("LSE", "NSE-1", "NSE-2")
    assert params.fits == tuple(run.fit(e) for e in params.extractors)  # same fit keys
    with pytest.raises(ValueError):
        CategorySelectionParams(fits=(FitConfig(), FitConfig()))
    with pytest.raises(ValueError):
        CategorySelectionParams(threshold=1.5)


# -- the analysis on real tiny stores ------------------------------------------------------------

EXTRACTORS = ("LSE", "NSE-1", "NSE-2")
NAMES = ["background", "skin", "eyebrows", "eyes", "nose", "lips", "mouth"]


@pytest.fixture(scope="module")
def small_eval_url(data_root, generator, segmenter) -> str:
    """A 32-image evaluation store (keeps six evaluations fast)."""
    cfg = DatasetConfig(split="eval", seed=2, n=32, chunk_size=16)
    return build_store(cfg, str(data_root), device="cpu")


@pytest.fixture(scope="module")
def template(tmp_path_factory, train_store_url, small_eval_url):
    """Table 1's round-1 fits and evaluations, then a selection with a threshold that drops
    classes, in a results root that each test copies (tests never share what they write)."""
    results = str(tmp_path_factory.mktemp("results"))
    ctx = RunContext(train_store_url, small_eval_url, results, "smoke", "run-a", "cpu")
    fits = tuple(FitConfig(extractor=e, schedule=TINY) for e in EXTRACTORS)
    best = np.zeros(len(NAMES))
    metas = {}
    for cfg in fits:  # what the reproduce flow does before this analysis
        metas[cfg.extractor] = fit_extractor(ctx.train_url, cfg, results, "cpu")
        df = evaluate_fit(metas[cfg.extractor], ctx.eval_url, results, "smoke", "run-a", "cpu")[
            "all"
        ]
        best[df["class_index"]] = np.fmax(best[df["class_index"]], df["iou"].to_numpy())
    assert best.max() > 0, "round-1 fits predict no class at all"
    # 0.5 drops every class when tiny fits stay below it: halve the best IoU in that case
    threshold = float(min(0.5, 0.5 * best.max()))
    params = CategorySelectionParams(threshold=threshold, fits=fits)
    result = run_and_finish("category_selection", ctx, params, fits=metas)
    return ctx, params, result, best, metas


@pytest.fixture
def selection(template, tmp_path):
    """The template's results, copied into this test's own results root."""
    ctx, params, result, best, metas = template
    root = tmp_path / "results"
    shutil.copytree(ctx.results_root, root)
    moved = RunContext(ctx.train_url, ctx.eval_url, str(root), "smoke", "run-a", "cpu")
    return moved, params, result, best, metas


def test_selection_end_to_end(selection):
    ctx, params, result, best, _ = selection
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
    assert list(r1["class_name"].unique()) == NAMES[1:]

    # round "selected": only kept classes, models with n_kept outputs
    r2 = table[table["round"] == "selected"]
    assert sorted(r2["class_index"].unique().tolist()) == kept
    assert r2["kept"].all() and len(r2) == 3 * len(kept)
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
    # round 1 is Table 1's fits (handed over by the DAG, so reused); round 2 trained fresh
    assert summ.loc[summ["round"] == "all", "fit_reused"].all()
    assert not summ.loc[summ["round"] == "selected", "fit_reused"].any()
    assert summ.groupby("round")["rel_diff"].max().tolist() == [0.0, 0.0]

    md = result.markdown
    assert "Table 4" in md and "Table 5" in md and "IoU > " in md
    assert all(name in md for name in r1["class_name"])
    assert Path(result.reports[0]).name == f"table4-smoke-{result.key[:8]}.md"


def _fit_dir(row: pd.Series) -> str:
    return f"{row['extractor'].lower()}-sel-{row['fit_key'][:16]}"


def test_round_one_uses_the_fits_it_is_handed(selection, monkeypatch):
    """Given Table 1's fits the analysis never calls the fit routine for round 1."""
    ctx, params, result, _, metas = selection
    Path(ctx.results_root, "manifests", f"category_selection-{result.key}.json").unlink()

    def boom(*a, **k):
        raise AssertionError("round 1 refitted although Table 1's fits were handed over")

    monkeypatch.setattr(job, "fit_extractor", boom)
    redone = run_and_finish("category_selection", ctx, params, fits=metas)
    assert not redone.reused and redone.key == result.key


def test_resume_reuses_result_and_fits(selection):
    ctx, params, result, _, _ = selection
    again = run_and_finish("category_selection", ctx, params)
    assert again.reused and again.key == result.key and again.markdown == result.markdown
    # without the manifest the tables are rebuilt, but every fit (both rounds) is reused
    Path(ctx.results_root, "manifests", f"category_selection-{result.key}.json").unlink()
    fits_before = sorted(p.name for p in Path(ctx.results_root, "fits").iterdir())
    redone = run_and_finish("category_selection", ctx, params)
    assert not redone.reused
    assert sorted(p.name for p in Path(ctx.results_root, "fits").iterdir()) == fits_before
    summ = read_table_part(ctx.results_root, SUMMARY_TABLE, result.key)
    assert summ["fit_reused"].all()
    manifest = json.loads(
        Path(ctx.results_root, "manifests", f"category_selection-{result.key}.json").read_bytes()
    )
    assert manifest["key"] == result.key


def test_keeping_every_class_reuses_round_one(selection, monkeypatch):
    """All kept → identity LUT, same fits: round 2 must not retrain (on 150 classes it would
    double the cost of the step for nothing)."""
    ctx, params, _, _, _ = selection
    monkeypatch.setattr(job, "select_classes", lambda iou, threshold: list(range(7)))
    before = sorted(p.name for p in Path(ctx.results_root, "fits").iterdir())
    other = params.model_copy(update={"threshold": 0.0})
    result = run_and_finish("category_selection", ctx, other)
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
    assert "round 2 reuses round 1" in result.markdown


def test_nothing_passes_the_threshold(selection):
    ctx, params, _, best, _ = selection
    strict = params.model_copy(update={"threshold": float(max(best.max(), 0.5) + 0.01)})
    with pytest.raises(LinearGanError, match="lower the threshold"):
        run_and_finish("category_selection", ctx, strict)


def _hand_made_round1(monkeypatch, iou_by_extractor: dict[str, list[float]]) -> None:
    """Round 1 sees these per-class IoUs (index = class) instead of the real evaluations."""

    def fake_evaluate_fit(meta, *a, **k):
        iou = iou_by_extractor[meta["extractor"]]
        df = pd.DataFrame(
            {
                "class_index": range(1, len(iou)),
                "iou": iou[1:],
                "images": [10] * (len(iou) - 1),
            }
        )
        return {"all": df, "detected": df}

    monkeypatch.setattr(job, "evaluate_fit", fake_evaluate_fit)


class RecordingRemap(RemappedSource):
    """Remembers the labels every round-2 training batch had before and after remapping."""

    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def next_batch(self, batch_size):
        feats, original = self.source.next_batch(batch_size)
        out = remap_labels(original, self.lut)
        RecordingRemap.seen.append((original.copy(), out))
        return feats, out


@pytest.mark.parametrize("dropped_as", ["background", "ignore"])
def test_non_adjacent_kept_classes_renumbered_and_remapped(selection, monkeypatch, dropped_as):
    """Hand-made round-1 IoUs keep eyebrows (2), nose (4) and mouth (6): new indices 1, 2, 3;
    round-2 training labels are the LUT image of the original labels (dropped classes become
    background or the ignore value) and evaluation treats dropped pixels accordingly."""
    ctx, params, _, _, metas = selection
    _hand_made_round1(
        monkeypatch,
        {
            "LSE": [NAN, 0.05, 0.40, 0.01, 0.02, 0.03, 0.04],
            "NSE-1": [NAN, 0.08, 0.00, 0.09, 0.60, 0.05, 0.00],
            "NSE-2": [NAN, 0.02, 0.00, 0.00, 0.00, 0.10, 0.25],  # lips: exactly 10 %, dropped
        },
    )
    RecordingRemap.seen = []
    monkeypatch.setattr(job, "RemappedSource", RecordingRemap)
    lse_only = params.model_copy(
        update={"threshold": 0.10, "fits": params.fits[:1], "dropped_as": dropped_as}
    )
    result = run_and_finish("category_selection", ctx, lse_only, fits=metas)
    table = read_table_part(ctx.results_root, TABLE, result.key)
    r1 = table[table["round"] == "all"].set_index("class_index")
    # only the LSE is in this run's fits, so only its IoUs count: eyebrows alone passes
    assert r1["kept"].to_dict() == {1: False, 2: True, 3: False, 4: False, 5: False, 6: False}

    three = params.model_copy(update={"threshold": 0.10, "dropped_as": dropped_as})
    RecordingRemap.seen = []
    result = run_and_finish("category_selection", ctx, three, fits=metas)
    table = read_table_part(ctx.results_root, TABLE, result.key)
    r1 = table[(table["round"] == "all") & (table["extractor"] == "LSE")].set_index("class_index")
    assert r1["new_index"].to_dict() == {1: -1, 2: 1, 3: -1, 4: 2, 5: -1, 6: 3}
    r2 = table[table["round"] == "selected"]
    assert sorted(r2["class_index"].unique()) == [2, 4, 6]
    assert (r2.set_index("class_index")["new_index"].groupby(level=0).first() == [1, 2, 3]).all()

    dropped = 0 if dropped_as == "background" else IGNORE_LABEL
    expected = np.array([0, dropped, 1, dropped, 2, dropped, 3], np.uint8)
    assert RecordingRemap.seen, "round 2 trained nothing"
    for original, out in RecordingRemap.seen:
        np.testing.assert_array_equal(out, expected[original])
        assert (out[np.isin(original, [1, 3, 5])] == dropped).all()

    # Evaluation: recompute the retrained LSE's per-class IoU by hand on the evaluation store.
    summ = read_table_part(ctx.results_root, SUMMARY_TABLE, result.key)
    lse = summ[(summ["round"] == "selected") & (summ["extractor"] == "LSE")].iloc[0]
    model, meta = load_extractor(Path(ctx.results_root) / "fits" / _fit_dir(lse))
    assert model.n_class == 4 and meta["kept_classes"] == [0, 2, 4, 6]
    store = FeatureStore.open(Target(ctx.eval_url))
    acc = IoUAccumulator(["background", "eyebrows", "nose", "mouth"])
    for _, chunk in store.iter_chunks():
        pred = predict(model, chunk.features, 64, torch.device("cpu"))
        label = expected[chunk.labels]
        if dropped_as == "ignore":  # excluded: neither label nor prediction counts there
            pred = np.where(label == IGNORE_LABEL, 0, pred)
            label = np.where(label == IGNORE_LABEL, 0, label)
        acc.update(pred.astype(np.uint8), label.astype(np.uint8))
    want = acc.result()
    got = r2[r2["extractor"] == "LSE"].set_index("new_index")
    for new in (1, 2, 3):
        assert got.loc[new, "iou"] == pytest.approx(want.iou[new], nan_ok=True)

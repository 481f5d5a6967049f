"""Fit and evaluation stages on the small real stores: checkpoints, reuse, Parquet output."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tasks.evaluate as evaluate_jobs
import tasks.fit as fit_jobs
from lineargan.config import FitConfig, Schedule
from lineargan.errors import FingerprintMismatchError, StoreIncompleteError
from lineargan.evaluate import predict
from lineargan.extractors import LSE
from lineargan.metrics import IoUAccumulator
from storage.checkpoints import load_extractor
from storage.feature_store import FeatureStore
from storage.tables import read_table
from storage.target import Target
from tasks.cache import prepare_store
from tasks.evaluate import IOU_DETECTED_TABLE, IOU_TABLE, evaluate_fit
from tasks.fit import fit_extractor, fit_key
from tests.conftest import small_dataset

TINY = Schedule(phases=((1, 4),), samples_per_epoch=16)  # 4 iterations of batch 4


@pytest.fixture
def results_root(tmp_path) -> str:
    """Each test its own results root: what one test writes never changes another's outcome."""
    return str(tmp_path / "results")


@pytest.fixture
def tiny_fit(train_store_url, results_root) -> dict:
    return fit_extractor(train_store_url, FitConfig(schedule=TINY), results_root, device="cpu")


def forbid(name: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} must not run when the result already exists")

    return fail


def test_fit_writes_checkpoint(tiny_fit, train_store_url, results_root):
    meta = tiny_fit
    assert meta["reused"] is False
    assert meta["extractor"] == "LSE" and meta["iterations"] == TINY.iterations() == 4
    assert math.isfinite(meta["final_loss"])
    spec = FeatureStore.open(Target(train_store_url)).spec
    assert meta["fit_key"] == fit_key(FitConfig(schedule=TINY), spec.digest())
    assert meta["train_digest"] == spec.digest()
    assert meta["class_names"] == list(spec.class_names)
    assert meta["fit_dir"].startswith(results_root)
    model, stored = load_extractor(meta["fit_dir"])
    assert isinstance(model, LSE)
    assert model.matrix().shape == (len(spec.class_names), sum(s[0] for s in spec.layer_shapes))
    assert stored["fit_key"] == meta["fit_key"] and "reused" not in stored


def test_second_fit_is_reused_without_training(
    tiny_fit, train_store_url, results_root, monkeypatch
):
    monkeypatch.setattr(fit_jobs, "drive", forbid("training"))
    again = fit_extractor(train_store_url, FitConfig(schedule=TINY), results_root, device="cpu")
    assert again["reused"] is True
    assert again["fit_key"] == tiny_fit["fit_key"] and again["fit_dir"] == tiny_fit["fit_dir"]
    assert {k: v for k, v in again.items() if k != "reused"} == {
        k: v for k, v in tiny_fit.items() if k != "reused"
    }


def test_fit_key_depends_on_config_and_store(tiny_fit):
    digest = tiny_fit["train_digest"]
    base = fit_key(FitConfig(schedule=TINY), digest)
    assert fit_key(FitConfig(schedule=TINY, seed=1), digest) != base
    assert fit_key(FitConfig(schedule=TINY, extractor="NSE-1"), digest) != base
    assert fit_key(FitConfig(schedule=TINY), "0" * 64) != base


def test_fit_is_reproducible(tiny_fit, train_store_url, tmp_path):
    """Same config, same store → same weights (the fit key promises it)."""
    other = fit_extractor(train_store_url, FitConfig(schedule=TINY), str(tmp_path), device="cpu")
    assert other["reused"] is False and other["fit_key"] == tiny_fit["fit_key"]
    a, _ = load_extractor(tiny_fit["fit_dir"])
    b, _ = load_extractor(other["fit_dir"])
    assert torch.equal(a.matrix(), b.matrix())
    assert other["final_loss"] == tiny_fit["final_loss"]


def test_fit_refuses_incomplete_store(tmp_path):
    url, _, _ = prepare_store(small_dataset("train", 5), str(tmp_path / "data"))
    with pytest.raises(StoreIncompleteError, match="Fix:"):
        fit_extractor(url, FitConfig(schedule=TINY), str(tmp_path / "results"), device="cpu")


def test_evaluate_writes_iou_table(tiny_fit, eval_store_url, results_root, monkeypatch):
    df = evaluate_fit(tiny_fit, eval_store_url, results_root, "test", "run-1", device="cpu")["all"]
    spec = FeatureStore.open(Target(eval_store_url)).spec
    names = list(spec.class_names)
    assert df.class_index.tolist() == list(range(1, len(names)))  # background dropped
    assert df.class_name.tolist() == names[1:]
    assert (df.fit_key == tiny_fit["fit_key"]).all() and (df.extractor == "LSE").all()
    assert (df.n_eval == spec.n).all() and (df.profile == "test").all()
    assert (df.run_id == "run-1").all()
    counted = df.images > 0
    assert df.iou[counted].between(0, 1).all() and df.iou[~counted].isna().all()
    assert (df.images <= spec.n).all()
    # face classes are in (nearly) every evaluation image, so they all count
    assert (df.set_index("class_name").loc[["skin", "eyes", "nose", "lips"], "images"] > 50).all()

    table = read_table(results_root, IOU_TABLE)
    mine = table[table.fit_key == tiny_fit["fit_key"]].reset_index(drop=True)
    assert len(mine) == len(df)
    np.testing.assert_array_equal(mine.iou.to_numpy(), df.iou.to_numpy())
    np.testing.assert_array_equal(mine.images.to_numpy(), df.images.to_numpy())

    # a second evaluation reads the part back instead of recomputing, and adds no rows
    monkeypatch.setattr(evaluate_jobs, "evaluate_subsets", forbid("evaluation"))
    again = evaluate_fit(tiny_fit, eval_store_url, results_root, "test", "run-2", device="cpu")[
        "all"
    ]
    assert again.run_id.eq("run-1").all()
    np.testing.assert_array_equal(again.iou.to_numpy(), df.iou.to_numpy())
    assert len(read_table(results_root, IOU_TABLE)) == len(table)


def test_detected_only_rows_are_the_iou_of_the_detected_images(
    tiny_fit, eval_store_url, results_root
):
    """The second table holds the same per-class IoU computed on the images whose labels come
    from the segmenter's own detection: recomputed here by hand on exactly those images."""
    evaluate_fit(tiny_fit, eval_store_url, results_root, "test", "run-1", device="cpu")["all"]
    got = read_table(results_root, IOU_DETECTED_TABLE)
    store = FeatureStore.open(Target(eval_store_url))
    detected = store.group["detected"][:]
    assert 0 < detected.sum() < store.spec.n  # the fixture store has both kinds of image
    model, _ = load_extractor(tiny_fit["fit_dir"])
    acc = IoUAccumulator(store.spec.class_names)
    for _, chunk in store.iter_chunks():
        keep = chunk.detected.astype(bool)
        pred = predict(model, [f[keep] for f in chunk.features], 64, torch.device("cpu"))
        acc.update(pred, chunk.labels[keep])
    want = acc.result()
    got = got.set_index("class_index")
    for c in range(1, len(store.spec.class_names)):
        assert got.loc[c, "images"] == want.images[c]
        assert got.loc[c, "iou"] == pytest.approx(want.iou[c], nan_ok=True)
    assert (got["n_eval"] == detected.sum()).all()


def test_evaluate_rejects_other_classes(tiny_fit, eval_store_url, results_root):
    meta = {**tiny_fit, "class_names": ["background", "hair"]}
    with pytest.raises(FingerprintMismatchError, match="Fix:"):
        evaluate_fit(meta, eval_store_url, results_root, "test", "r", device="cpu")["all"]


def test_longer_lse_fit_learns_face_layout(train_store_url, eval_store_url, results_root, tiny_fit):
    """A few more (larger-step) iterations beat the 4-iteration fit and find the skin region."""
    sched = Schedule(phases=((2, 4),), samples_per_epoch=16, lr=1e-2)
    meta = fit_extractor(train_store_url, FitConfig(schedule=sched), results_root, device="cpu")
    assert meta["iterations"] == 8 and meta["fit_key"] != tiny_fit["fit_key"]
    df = evaluate_fit(meta, eval_store_url, results_root, "test", "r", device="cpu")["all"]
    tiny = evaluate_fit(tiny_fit, eval_store_url, results_root, "test", "r", device="cpu")["all"]
    skin = df.set_index("class_name").loc["skin", "iou"]
    assert skin > 0.3  # the face is most of the image: even 8 steps find much of it
    assert df.iou.mean() > tiny.iou.mean()


def test_keys_with_extra_fields_keep_the_checkpoints_of_earlier_versions():
    """Category selection's round-2 checkpoints were keyed by a flat JSON of the fit, the
    store and the kept classes: the one fit routine must reach the same directories."""
    import hashlib
    import json

    cfg, digest = FitConfig(schedule=TINY), "d" * 64
    extra = {"kept_classes": [0, 2, 5], "dropped_as": "background"}
    before = hashlib.sha256(
        json.dumps(
            {"fit": cfg.model_dump(mode="json"), "train": digest, **extra}, sort_keys=True
        ).encode()
    ).hexdigest()
    assert fit_key(cfg, digest, extra) == before
    assert fit_key(cfg, digest) != before
    with pytest.raises(ValueError):
        fit_key(cfg, digest, {"train": "x"})

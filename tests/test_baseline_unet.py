"""The baseline UNet segmenter of SCS/SIE: its architecture, a deterministic training that
learns the reference labels, gradients to the image, checkpoint reuse and its analysis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lineargan.baseline import (
    UNetParams,
    UNetTraining,
    build_unet,
    class_weights,
    segmenter_iou,
)
from lineargan.config import RunConfig
from lineargan.driver import drive
from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models import DifferentiableSegmenter, SegmenterOutput
from lineargan.models.unet import SegmentationUNet, UNetSegmenter
from storage.checkpoints import load_unet, save_extractor
from tasks.analyses.registry import ANALYSES
from tasks.analyses.runner import run_and_finish
from tasks.baseline import evaluate_segmenter, read_images_and_labels, unet_or_reuse

TINY = UNetParams(steps=4, batch=4, width=4, depth=2)


@pytest.fixture(scope="module")
def train_pairs(train_store_url) -> tuple[np.ndarray, np.ndarray]:
    from storage.feature_store import FeatureStore
    from storage.target import Target

    return read_images_and_labels(FeatureStore.open(Target(train_store_url)))


def test_unet_keeps_the_resolution_and_refuses_indivisible_sizes():
    net = SegmentationUNet(7, width=4, depth=2)
    assert net(torch.zeros(2, 3, 16, 24)).shape == (2, 7, 16, 24)
    assert SegmentationUNet(**net.init_args()).init_args() == {"n_class": 7, "width": 4, "depth": 2}
    with pytest.raises(LinearGanError, match="divisible by 8"):
        SegmentationUNet(7, width=4, depth=3)(torch.zeros(1, 3, 16, 20))


def test_segment_converts_uint8_images_and_labels_every_image(train_pairs):
    images, _ = train_pairs
    seg = UNetSegmenter(build_unet(7, TINY), tuple("abcdefg"), "k")
    seg.batch_size = 5  # several batches, the last one short
    out = seg.segment(images[:12])
    assert isinstance(seg, DifferentiableSegmenter) and isinstance(out, SegmenterOutput)
    assert out.labels.shape == (12, 64, 64) and out.labels.dtype == np.uint8
    assert out.detected.all() and len(out.detected) == 12
    x = torch.from_numpy(images[:12]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        assert np.array_equal(out.labels, seg.logits(x).argmax(1).numpy())


def test_training_is_deterministic(train_pairs):
    images, labels = train_pairs
    weights = []
    for _ in range(2):
        net = build_unet(7, TINY)
        result = drive(UNetTraining(net, images, labels, TINY, torch.device("cpu")))
        weights.append(net.state_dict())
    assert result.iterations == TINY.steps and np.isfinite(result.final_loss)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_short_training_beats_the_all_skin_predictor(train_pairs):
    images, labels = train_pairs
    names = ("background", "skin", "eyebrows", "eyes", "nose", "lips", "mouth")
    # class weights: a few steps of plain cross-entropy learn skin and background only
    params = UNetParams(steps=150, batch=8, width=8, lr=5e-3, class_balance=0.5)
    net = build_unet(len(names), params)
    drive(UNetTraining(net, images, labels, params, torch.device("cpu")))
    chunks = [(images, labels, None)]
    unet = segmenter_iou(UNetSegmenter(net, names, "k"), chunks, names)["all"]

    class AllSkin(DifferentiableSegmenter):
        def logits(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(len(x), len(names), *x.shape[2:])
            out[:, 1] = 1
            return out

    trivial = segmenter_iou(AllSkin(), chunks, names)["all"]
    assert unet.miou > trivial.miou + 0.15, (unet.miou, trivial.miou)
    assert (unet.iou[2:] > 0.1).sum() >= 2  # parts beyond skin are found


def test_class_weights_favour_rare_classes():
    labels = np.array([[0] * 6 + [1] * 3 + [2]], np.uint8)  # class 3 never appears
    assert class_weights(labels, 4, 0.0) is None
    w = class_weights(labels, 4, 1.0)
    assert w[2] > w[1] > w[0] and w[1] == pytest.approx(1.0) and w[3] == 1.0


def test_gradients_flow_from_the_logits_to_the_image(train_pairs):
    images, _ = train_pairs
    seg = UNetSegmenter(build_unet(7, TINY), tuple("abcdefg"), "k")
    x = (torch.from_numpy(images[:2]).permute(0, 3, 1, 2).float() / 127.5 - 1).requires_grad_()
    seg.logits(x)[:, 3].sum().backward()  # what SCS does: a class's logits w.r.t. the image
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in seg.net.parameters())


def test_unet_or_reuse_trains_once_then_reloads(ctx):
    train, evals = ctx.stores()
    seg, meta = unet_or_reuse(train, ctx.train_url, TINY, ctx.results_root, "cpu")
    again, meta2 = unet_or_reuse(train, ctx.train_url, TINY, ctx.results_root, "cpu")
    assert (meta["reused"], meta2["reused"]) == (False, True)
    assert meta2["fit_dir"] == meta["fit_dir"] and meta2["key"] == seg.weights_sha256
    assert seg.class_names == again.class_names == train.spec.class_names
    first, second = seg.net.state_dict(), again.net.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other, _ = unet_or_reuse(
        train, ctx.train_url, TINY.model_copy(update={"seed": 1}), ctx.results_root, "cpu"
    )
    assert other.weights_sha256 != seg.weights_sha256
    results = evaluate_segmenter(again, evals, "cpu")
    assert set(results) == {"all", "detected"} and 0 <= results["all"].miou <= 1


def test_load_unet_refuses_an_extractor_checkpoint(tmp_path):
    from lineargan.extractors import build_extractor

    save_extractor(build_extractor("LSE", n_class=3, dims=[4]), tmp_path / "lse")
    with pytest.raises(CheckpointError, match="not a SegmentationUNet"):
        load_unet(tmp_path / "lse")
    with pytest.raises(CheckpointError, match="not a finished UNet checkpoint"):
        load_unet(tmp_path / "missing")


def test_the_analysis_writes_its_table_and_renders(ctx):
    assert ANALYSES["baseline_segmenter"].params is UNetParams
    result = run_and_finish("baseline_segmenter", ctx, TINY)
    table = pd.read_parquet(result.tables["baseline_segmenter"])
    assert list(table["class_name"]) == ["skin", "eyebrows", "eyes", "nose", "lips", "mouth"]
    assert table["iterations"].eq(TINY.steps).all() and table["n_eval"].eq(64).all()
    assert table["n_train"].eq(56).all() and table["n_holdout"].eq(8).all()  # the last 1/8
    assert table["miou_holdout"].between(0, 1).all()
    assert "8 held-out images, never on the evaluation split" in result.markdown
    counted = table[table["images"] > 0]
    assert table["miou"].iloc[0] == pytest.approx(counted["iou"].mean())
    assert "Baseline UNet vs the reference segmenter" in result.markdown
    assert "mIoU" in result.markdown and "detected only" in result.markdown
    assert run_and_finish("baseline_segmenter", ctx, TINY).reused


def test_profiles_give_valid_params():
    for profile in ("smoke", "quick", "paper"):
        params = UNetParams.for_run(RunConfig(profile=profile))
        assert 64 % 2**params.depth == 0  # the cached images are 64 px


def test_a_killed_unet_fit_resumes_to_the_same_weights(tmp_path):
    """Saved every step and killed after step 7, the fit resumes there and ends with the
    weights of an uninterrupted fit."""
    from storage.checkpoints import PartialFit

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (12, 16, 16)).astype(np.uint8)
    params = UNetParams(steps=12, batch=4, width=4, depth=2, lr_drop_at=0.5)

    class Killed(Exception):
        pass

    class KillAfter(PartialFit):
        def save(self, state: dict) -> None:
            super().save(state)
            if state["iteration"] == 7:
                raise Killed

    whole = build_unet(3, params)
    drive(UNetTraining(whole, images, labels, params, torch.device("cpu")))
    interrupted = build_unet(3, params)
    with pytest.raises(Killed):
        method = UNetTraining(interrupted, images, labels, params, torch.device("cpu"))
        drive(method, checkpoint=KillAfter(tmp_path), save_every_s=0)
    resumed = build_unet(3, params)
    partial = PartialFit(tmp_path)
    assert partial.load()["iteration"] == 7
    method = UNetTraining(resumed, images, labels, params, torch.device("cpu"))
    drive(method, checkpoint=partial, save_every_s=1e9)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_the_unet_never_trains_on_its_held_out_images(ctx, train_pairs):
    """Its settings are chosen on the training store's last images, which it does not train
    on (not on the evaluation split SCS draws targets from): the fit equals one on the other
    images alone, and its metadata carries its mIoU on the held-out ones."""
    train, _ = ctx.stores()
    params = TINY.model_copy(update={"holdout": 0.25})
    seg, meta = unet_or_reuse(train, ctx.train_url, params, ctx.results_root, "cpu")
    assert (meta["n_train"], meta["holdout_images"]) == (48, [48, 64])
    assert 0 <= meta["holdout_miou"] <= 1 and 0 <= meta["holdout_miou_detected"] <= 1
    images, labels = train_pairs
    alone = build_unet(len(train.spec.class_names), params)
    drive(UNetTraining(alone, images[:48], labels[:48], params, torch.device("cpu")))
    mine = seg.net.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in alone.state_dict().items())
    assert unet_or_reuse(train, ctx.train_url, params, ctx.results_root, "cpu")[1]["reused"]
    _, everything = unet_or_reuse(
        train, ctx.train_url, TINY.model_copy(update={"holdout": 0.0}), ctx.results_root, "cpu"
    )
    assert everything["n_train"] == 64 and "holdout_miou" not in everything
    assert [UNetParams(holdout=h).split(n) for h, n in ((0.125, 2048), (0.5, 3), (0.9, 2))] == [
        1792,
        1,
        1,
    ]

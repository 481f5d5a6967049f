"""Class centers (Sec 3.3, Fig 4): the shared geometry and the analysis on small real stores."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lineargan.analyses.geometry import (
    ClassSumAccumulator,
    default_resolution,
    feature_dim,
    labels_at,
    resize,
    segment_by_centers,
    unit_pixel_features,
)
from lineargan.config import RunConfig
from lineargan.errors import LinearGanError
from lineargan.extractors.base import upsample
from lineargan.metrics import IoUAccumulator
from storage.feature_store import FeatureStore
from storage.tables import read_table_part
from storage.target import Target
from tasks.analyses.class_centers import step as cc
from tasks.analyses.class_centers.science import ClassCentersParams
from tasks.analyses.runner import run_and_finish

DCGAN_SHAPES = ((512, 4, 4), (256, 8, 8), (128, 16, 16), (64, 32, 32))


# -- geometry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "size"), [(4, 32), (8, 32), (16, 32), (32, 16), (5, 13)])
def test_resize_is_the_extractors_bilinear_upsample(src, size):
    x = torch.randn(2, 3, src, src)
    assert torch.allclose(resize(x, size), upsample(x, size), atol=1e-5)


def test_unit_features_concatenate_all_layers_at_one_resolution():
    g = torch.Generator().manual_seed(0)
    feats = [torch.rand(2, c, h, w, generator=g).half().numpy() for c, h, w in DCGAN_SHAPES]
    size = default_resolution(DCGAN_SHAPES)
    unit = unit_pixel_features(feats, size)
    assert size == 32 and feature_dim(DCGAN_SHAPES) == 960
    assert unit.shape == (2, 960, 32, 32) and unit.dtype == torch.float32
    assert torch.allclose(unit.norm(dim=1), torch.ones(2, 32, 32), atol=1e-5)
    ref = torch.cat([upsample(torch.from_numpy(f).float(), 32) for f in feats], dim=1)
    assert torch.allclose(unit, F.normalize(ref, dim=1), atol=1e-5)


def test_labels_are_sampled_at_pixel_centres():
    lab = torch.randint(0, 7, (3, 64, 64), dtype=torch.uint8)
    assert torch.equal(labels_at(lab, 32), lab[:, 1::2, 1::2].long())
    assert torch.equal(labels_at(lab, 64), lab.long())


def test_class_sums_match_brute_force_and_centers_are_unit():
    g = torch.Generator().manual_seed(1)
    unit = F.normalize(torch.randn(4, 16, 6, 6, generator=g), dim=1)
    labels = torch.randint(0, 3, (4, 6, 6), generator=g)  # class 3 of 4 never occurs
    acc = ClassSumAccumulator(4, 16)
    acc.update(unit[:2], labels[:2])
    acc.update(unit[2:], labels[2:])
    flat, y = unit.permute(0, 2, 3, 1).reshape(-1, 16).double(), labels.reshape(-1)
    for k in range(3):
        assert torch.allclose(acc.sums[k], flat[y == k].sum(0), atol=1e-5)
        assert acc.counts[k] == (y == k).sum()
    centers, present = acc.centers()
    assert present.tolist() == [True, True, True, False]
    assert torch.allclose(centers[:3].norm(dim=1), torch.ones(3), atol=1e-6)
    expected = F.normalize(flat[y == 1].mean(0), dim=0).float()
    assert torch.allclose(centers[1], expected, atol=1e-6)


def test_nearest_center_segments_separable_features_perfectly():
    """Features pointing along one axis per class (plus noise): centers recover the classes,
    and a class without a center is never predicted."""
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 3, (2, 8, 8), generator=g)
    raw = F.one_hot(labels, 8).permute(0, 3, 1, 2).float() + 0.1 * torch.rand(2, 8, 8, 8)
    unit = F.normalize(raw, dim=1)
    acc = ClassSumAccumulator(4, 8)
    acc.update(unit, labels)
    centers, present = acc.centers()
    pred = segment_by_centers(unit, centers, present, 8)
    assert torch.equal(pred.long(), labels)
    assert not (pred == 3).any()


# -- the analysis on real stores ------------------------------------------------------------------


def _skin_everywhere_miou(eval_url: str) -> float:
    store = FeatureStore.open(Target(eval_url))
    acc = IoUAccumulator(store.spec.class_names)
    for _, chunk in store.iter_chunks(features=False):
        acc.update(np.ones_like(chunk.labels), chunk.labels)
    return acc.result().miou


def test_class_centers_on_real_stores_and_resume(ctx, monkeypatch):
    params = ClassCentersParams(n_images=20, figure_samples=3)  # 20: not a chunk multiple
    result = run_and_finish("class_centers", ctx, params)
    assert not result.reused and set(result.tables) == {
        "class_centers_iou",
        "class_centers_summary",
        "class_centers",
    }

    iou = read_table_part(ctx.results_root, "class_centers_iou", result.key)
    summary = read_table_part(ctx.results_root, "class_centers_summary", result.key)
    centers = read_table_part(ctx.results_root, "class_centers", result.key)
    names = list(FeatureStore.open(Target(ctx.train_url)).spec.class_names)
    assert list(iou["class_name"]) == names[1:]  # background ignored (Appx A)
    assert (iou["method"] == "class-centers").all() and (iou["run_id"] == "test-run").all()
    assert (iou["images"] > 0).all() and iou["iou"].between(0, 1).all()
    row = summary.iloc[0]
    assert row["n_images"] == 20 and row["resolution"] == 32 and row["feature_dim"] == 960
    assert np.isnan(row["lse_miou"])
    assert row["miou"] == pytest.approx(iou["iou"].mean())
    evals = FeatureStore.open(Target(ctx.eval_url))
    assert 0 < row["n_eval_detected"] == evals.n_detected() < row["n_eval"]
    assert 0 <= row["miou_detected"] <= 1 and row["miou_detected"] != row["miou"]
    # Real behaviour: nearest-center segmentation is far better than labelling everything skin.
    assert row["miou"] > 0.15
    assert row["miou"] > 2 * _skin_everywhere_miou(ctx.eval_url)

    # Centers: one unit vector per class, from exactly 20 images' pixels at 32×32.
    assert list(centers["class_name"]) == names
    assert centers["n_pixels"].sum() == 20 * 32 * 32
    for vec in centers["center"]:
        assert len(vec) == 960 and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)

    png = Image.open(io.BytesIO(Target(result.figures[0]).read_bytes()))
    assert result.figures[0].endswith(f"fig4-smoke-{result.key[:8]}.png") and png.width > 3 * 64
    assert "class centers" in result.markdown and "LSE (Table 1)" not in result.markdown

    # Resume: same key → stored result, nothing recomputed.
    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(cc, "accumulate_class_sums", boom)
    again = run_and_finish("class_centers", ctx, params)
    assert again.reused and again.key == result.key and again.markdown == result.markdown

    # The LSE mIoU is not part of the key: passing it rewrites summary and markdown only.
    with_lse = run_and_finish("class_centers", ctx, params, reference={"LSE": 0.5})
    assert with_lse.reused and with_lse.key == result.key
    lse_row = next(line for line in with_lse.markdown.splitlines() if "LSE (Table 1)" in line)
    assert [c.strip() for c in lse_row.split("|")][1:3] == ["LSE (Table 1)", "50.0"]
    stored = read_table_part(ctx.results_root, "class_centers_summary", result.key)
    assert stored["lse_miou"].iloc[0] == 0.5 and stored["miou"].iloc[0] == row["miou"]
    again = run_and_finish("class_centers", ctx, params, reference={"LSE": 0.5})
    assert again.markdown == with_lse.markdown


def test_resolution_above_the_output_is_refused(ctx):
    with pytest.raises(LinearGanError, match="resolution 128"):
        run_and_finish("class_centers", ctx, ClassCentersParams(n_images=4, resolution=128))


def test_profiles_scale_the_number_of_images():
    assert ClassCentersParams.for_run(RunConfig(profile="paper")).n_images == 3000
    assert ClassCentersParams.for_run(RunConfig(profile="quick")).n_images == 1024
    assert ClassCentersParams.for_run(RunConfig(profile="smoke")).n_images == 64

"""IoU exactly as Appx A, on hand-made 2×2 label maps with hand-computed expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lineargan.metrics import IoUAccumulator

CLASSES = ("background", "A", "B", "C", "D")  # C never appears anywhere

# image 0: A: label {(0,1),(1,0)}, pred {(0,0),(0,1)} → ∩1 ∪3 → 1/3
#          B: label {(1,1)} pred {(1,1)} → 1;  D: absent from both → skipped
# image 1: A: absent from both → skipped;  B: in label, never predicted → 0
#          D: label {(0,0),(0,1)}, pred {(0,0)} → ∩1 ∪2 → 1/2
# image 2: only background in the label; A predicted at one pixel → A counts with IoU 0
LABELS = np.array(
    [
        [[0, 1], [1, 2]],
        [[4, 4], [2, 0]],
        [[0, 0], [0, 0]],
    ],
    dtype=np.uint8,
)
PREDS = np.array(
    [
        [[1, 1], [0, 2]],
        [[4, 0], [0, 0]],
        [[1, 0], [0, 0]],
    ],
    dtype=np.uint8,
)

EXPECTED_IOU = {1: (1 / 3 + 0) / 2, 2: (1 + 0) / 2, 4: 0.5 / 1}
EXPECTED_IMAGES = {0: 0, 1: 2, 2: 2, 3: 0, 4: 1}
EXPECTED_MIOU = (EXPECTED_IOU[1] + EXPECTED_IOU[2] + EXPECTED_IOU[4]) / 3  # 7/18


def check(result) -> None:
    assert result.class_names == CLASSES
    assert math.isnan(result.iou[0]), "background must be ignored"
    assert math.isnan(result.iou[3]), "a class that never appears has no IoU"
    for c, v in EXPECTED_IOU.items():
        assert result.iou[c] == pytest_approx(v), (c, result.iou[c], v)
    assert [int(result.images[c]) for c in range(len(CLASSES))] == [
        EXPECTED_IMAGES[c] for c in range(len(CLASSES))
    ]
    assert result.miou == pytest_approx(EXPECTED_MIOU)
    assert result.miou == pytest_approx(7 / 18)


def pytest_approx(v: float):
    return pytest.approx(v, abs=1e-12)


def test_iou_appendix_a_rules_single_batch():
    acc = IoUAccumulator(CLASSES)
    acc.update(PREDS, LABELS)
    check(acc.result())


def test_iou_is_per_image_mean_independent_of_batching():
    acc = IoUAccumulator(CLASSES)
    for i in range(len(LABELS)):
        acc.update(torch.from_numpy(PREDS[i : i + 1]), torch.from_numpy(LABELS[i : i + 1]))
    check(acc.result())


def test_skipped_class_is_neither_zero_nor_one():
    # D is absent from images 0 and 2: if they counted as 1 the IoU would be (1+.5+1)/3,
    # as 0 it would be .5/3; only skipping gives .5.
    acc = IoUAccumulator(CLASSES)
    acc.update(PREDS, LABELS)
    assert acc.result().iou[4] == pytest_approx(0.5)


def test_iou_is_not_pooled_over_pixels():
    # Pooled over the batch, A would be ∩1 / ∪4 = 0.25; Appx A averages per image: 1/6.
    acc = IoUAccumulator(CLASSES)
    acc.update(PREDS, LABELS)
    assert acc.result().iou[1] == pytest_approx(1 / 6)


def test_perfect_prediction_gives_one():
    acc = IoUAccumulator(CLASSES)
    acc.update(LABELS, LABELS)
    res = acc.result()
    assert res.iou[1] == 1 and res.iou[2] == 1 and res.iou[4] == 1
    assert res.miou == 1.0
    # predictions never add counts where both sides are absent
    assert list(res.images) == [0, 1, 2, 0, 1]


def test_empty_accumulator_has_nan_miou():
    res = IoUAccumulator(CLASSES).result()
    assert np.isnan(res.iou).all()
    assert (res.images == 0).all()
    assert math.isnan(res.miou)


def test_prediction_on_an_out_of_range_label_is_a_false_positive():
    """A label pixel outside the class range (255 = a segmenter's "ignore") belongs to no
    class, but the prediction there is still in the predicted class's set A_i (Appx A)."""
    label = np.array([[[1, 1], [255, 0]]], np.uint8)
    pred = np.array([[[1, 0], [1, 2]]], np.uint8)
    acc = IoUAccumulator(("background", "A", "B"))
    acc.update(pred, label)
    res = acc.result()
    # A: label {(0,0),(0,1)}, pred {(0,0),(1,0)}: ∩1, ∪3 (the 255 pixel is a false positive)
    assert res.iou[1] == pytest_approx(1 / 3)
    # B is predicted at a background pixel only: counted, IoU 0
    assert res.iou[2] == 0 and res.images[2] == 1
    # nothing spills into the next image: a second image with only 255 labels and background
    # predictions adds no count for any class
    acc.update(np.zeros((1, 2, 2), np.uint8), np.full((1, 2, 2), 255, np.uint8))
    assert list(acc.result().images) == [0, 1, 1]

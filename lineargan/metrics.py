"""IoU exactly as Appx A of the paper.

Per image and per class: IoU = |A∩B| / |A∪B|. Background (class 0) is ignored. A class absent
from both prediction and label in an image is skipped for that image (counted neither as 0 nor
as 1). Per-class IoU is the mean over the images where the class counts; mIoU is the mean over
classes that counted in at least one image (a class that never appears in the evaluation set
has no IoU and is reported as NaN with 0 images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class IoUResult:
    class_names: tuple[str, ...]
    iou: np.ndarray  # (n_class,), NaN where not counted; index 0 (background) is always NaN
    images: np.ndarray  # (n_class,), images in which each class counted

    @property
    def miou(self) -> float:
        vals = self.iou[1:][self.images[1:] > 0]
        return float(vals.mean()) if vals.size else float("nan")


class IoUAccumulator:
    """Streams (prediction, label) batches and accumulates per-class sums over images."""

    def __init__(self, class_names: tuple[str, ...] | list[str], ignore_index: int = 0) -> None:
        self.class_names = tuple(class_names)
        self.n_class = len(self.class_names)
        self.ignore_index = ignore_index
        self._sum = np.zeros(self.n_class, dtype=np.float64)
        self._count = np.zeros(self.n_class, dtype=np.int64)

    def update(self, pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> None:
        pred = torch.as_tensor(pred).long().reshape(pred.shape[0], -1)
        label = torch.as_tensor(label).long().reshape(label.shape[0], -1).to(pred.device)
        b, m = pred.shape[0], self.n_class
        # A label outside [0, m) (e.g. a segmenter's 255 = "ignore") belongs to no class: it
        # goes to a spare bin (so it never spills into the next image's counts), while the
        # prediction made there still counts for the predicted class. Appx A's A_i is the set
        # of pixels predicted as the class, so such a pixel is a false positive of it.
        valid = (label >= 0) & (label < m)
        label = torch.where(valid, label, torch.full_like(label, m))
        pred = pred.clamp(0, m - 1)
        m = m + 1
        offset = torch.arange(b, device=pred.device).unsqueeze(1) * m
        area_p = torch.bincount((pred + offset).ravel(), minlength=b * m).view(b, m)
        area_l = torch.bincount((label + offset).ravel(), minlength=b * m).view(b, m)
        hit = pred == label
        inter = torch.bincount((label + offset)[hit], minlength=b * m).view(b, m)
        union = area_p + area_l - inter
        counted = union > 0
        iou = torch.where(
            counted,
            inter.double() / union.clamp(min=1).double(),
            torch.zeros((), dtype=torch.float64, device=pred.device),
        )
        self._sum += iou.sum(0)[:-1].cpu().numpy()
        self._count += counted.sum(0)[:-1].cpu().numpy()

    def result(self) -> IoUResult:
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(self._count > 0, self._sum / np.maximum(self._count, 1), np.nan)
        images = self._count.copy()
        if 0 <= self.ignore_index < self.n_class:
            iou[self.ignore_index] = np.nan
            images[self.ignore_index] = 0
        return IoUResult(self.class_names, iou, images)


class SubsetIoU:
    """IoU on all images and on a subset of them (a boolean per image, e.g. the store's
    ``detected`` flags: the images whose labels the segmenter's own detector produced rather
    than a fallback), accumulated in the same pass from the same predictions."""

    def __init__(self, class_names: tuple[str, ...] | list[str]) -> None:
        self.all = IoUAccumulator(class_names)
        self.subset = IoUAccumulator(class_names)
        self.has_subset = False

    def update(
        self,
        pred: torch.Tensor | np.ndarray,
        label: torch.Tensor | np.ndarray,
        mask: np.ndarray | None = None,
    ) -> None:
        self.all.update(pred, label)
        if mask is None:
            return
        self.has_subset = True
        keep = np.asarray(mask, dtype=bool)
        if keep.any():
            self.subset.update(pred[keep], label[keep])

    def results(self) -> dict[str, IoUResult]:
        """``{"all": ..., "detected": ...}``; "detected" only when some update had a mask."""
        out = {"all": self.all.result()}
        if self.has_subset:
            out["detected"] = self.subset.result()
        return out

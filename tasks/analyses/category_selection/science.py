"""Category selection (Appx E): which segmenter classes a GAN actually generates.

The paper trains LSE, NSE-1 and NSE-2 on all of the segmenter's classes (ADE20K: 150), keeps a
class when *any* extractor predicts it with IoU strictly above a threshold (10 %), and retrains
on the kept classes only. This module holds the science of that step, free of storage:

- :func:`select_classes`: the selection rule on per-class IoU tables (background always kept);
- :func:`build_lut` / :func:`remap_labels`: old → new label lookup table (kept classes
  renumbered contiguously in their original order);
- :class:`RemappedSource`: a :class:`lineargan.training.BatchSource` wrapper that remaps the
  labels of any source (in the pipeline a ``storage.stream.ChunkStream``);
- :func:`evaluate_remapped`: per-class IoU (Appx A) of a model trained on remapped labels.

Dropped classes (``dropped_as``):

- ``"background"`` (the default): their pixels become class 0. ADE20K labels have no "ignore"
  value for things that are not selected, and folding them into background keeps every pixel
  supervised, exactly as the face segmenter already treats everything that is not a face part.
  For a kept class the IoU is unchanged by this mapping (its label and prediction pixel sets are
  the same), so round-1 and round-2 per-class IoUs are directly comparable.
- ``"ignore"``: their pixels get :data:`IGNORE_LABEL` (255); training excludes them from the
  loss (cross-entropy ``ignore_index``) and evaluation excludes them from every class's IoU (both
  prediction and label are set to background there, which Appx A's IoU ignores).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from lineargan.config import ALL_EXTRACTORS, FitConfig, Frozen, RunConfig
from lineargan.evaluate import predict
from lineargan.extractors.base import SemanticExtractor
from lineargan.metrics import IoUResult, SubsetIoU
from lineargan.training import BatchSource, skip_samples

IGNORE_LABEL = 255
DroppedAs = Literal["background", "ignore"]


def select_classes(
    iou_by_extractor: Mapping[str, Sequence[float] | np.ndarray], threshold: float
) -> list[int]:
    """Original indices of the kept classes, ascending, background (0) always first.

    ``iou_by_extractor`` maps each extractor to its per-class IoU (fractions, index = class
    index, NaN where the class never counted). Class ``c > 0`` is kept when
    ``iou[c] > threshold`` (strictly) for at least one extractor; NaN never passes.
    """
    if not iou_by_extractor:
        raise ValueError("select_classes needs the IoU of at least one extractor")
    rows = [np.asarray(v, dtype=np.float64) for v in iou_by_extractor.values()]
    if len({r.shape for r in rows}) != 1 or rows[0].ndim != 1:
        raise ValueError(
            "every extractor needs one IoU per class (1-D arrays of the same length), got "
            + ", ".join(f"{k}: {np.shape(v)}" for k, v in iou_by_extractor.items())
        )
    table = np.nan_to_num(np.stack(rows), nan=-np.inf)
    passed = np.any(table > threshold, axis=0)
    passed[0] = True  # background is always class 0 of the retrained extractors
    return [int(c) for c in np.flatnonzero(passed)]


def build_lut(
    kept: Iterable[int], n_class: int, dropped_as: DroppedAs = "background"
) -> np.ndarray:
    """A 256-entry uint8 lookup table mapping original labels to retrained labels.

    Kept classes (background is added when missing) are renumbered 0..k-1 in their original
    order; dropped classes, and any label value ≥ ``n_class``, map to 0 (``"background"``) or to
    :data:`IGNORE_LABEL` (``"ignore"``).
    """
    if dropped_as not in ("background", "ignore"):
        raise ValueError(f"dropped_as must be 'background' or 'ignore', got {dropped_as!r}")
    if not 1 <= n_class <= IGNORE_LABEL:
        raise ValueError(f"n_class must be in [1, {IGNORE_LABEL}], got {n_class}")
    kept = sorted({0, *(int(c) for c in kept)})
    if kept[-1] >= n_class:
        raise ValueError(f"kept class {kept[-1]} is outside the {n_class} classes")
    fill = 0 if dropped_as == "background" else IGNORE_LABEL
    lut = np.full(256, fill, dtype=np.uint8)
    lut[kept] = np.arange(len(kept), dtype=np.uint8)
    return lut


def remap_labels(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[labels]`` for uint8 label maps of any shape."""
    if labels.dtype != np.uint8:
        raise TypeError(f"labels must be uint8, got {labels.dtype}")
    return lut[labels]


class RemappedSource:
    """A :class:`~lineargan.training.BatchSource` whose labels pass through ``lut``.

    Features are passed through untouched (no copy); only the labels of each batch are remapped.
    Closing (or leaving the ``with`` block) closes the wrapped source when it can be closed.
    """

    def __init__(self, source: BatchSource, lut: np.ndarray) -> None:
        lut = np.asarray(lut)
        if lut.shape != (256,) or lut.dtype != np.uint8:
            raise ValueError(f"lut must be a (256,) uint8 array, got {lut.shape} {lut.dtype}")
        self.source = source
        self.lut = lut

    def next_batch(self, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
        feats, labels = self.source.next_batch(batch_size)
        return feats, remap_labels(labels, self.lut)

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def skip(self, n: int) -> None:
        skip_samples(self.source, n)

    def __enter__(self) -> RemappedSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def evaluate_remapped(
    model: SemanticExtractor,
    chunks: Iterable[tuple[list[np.ndarray], np.ndarray, np.ndarray | None]],
    lut: np.ndarray,
    class_names: Sequence[str],
    size: int,
    device: torch.device,
) -> dict[str, IoUResult]:
    """Per-class IoU (Appx A) of ``model`` against labels remapped by ``lut``, chunk by chunk,
    on all images and on those each chunk's mask selects (:class:`SubsetIoU`).

    ``class_names`` are the retrained model's classes (kept classes in their new order).
    Pixels labelled :data:`IGNORE_LABEL` after remapping count for no class.
    """
    model.to(device).eval()
    acc = SubsetIoU(tuple(class_names))
    for feats, labels, mask in chunks:
        target = remap_labels(labels, lut)
        pred = predict(model, feats, size, device)
        ignored = target == IGNORE_LABEL
        if ignored.any():
            target = np.where(ignored, 0, target).astype(np.uint8)
            pred = np.where(ignored, 0, pred).astype(np.uint8)
        acc.update(pred, target, mask)
    return acc.results()


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
    def for_run(
        cls, config: RunConfig, after: Mapping[str, Frozen] | None = None
    ) -> CategorySelectionParams:
        """Threshold 10 %, the run's extractors fitted as in Table 1 (so round 1 reuses Table 1's
        fits)."""
        return cls(fits=tuple(config.fit(e) for e in config.extractors))

    @property
    def extractors(self) -> tuple[str, ...]:
        return tuple(f.extractor for f in self.fits)

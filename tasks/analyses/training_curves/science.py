"""Fig 8 (Appx D): the mIoU of every extractor during its training.

Table 1's fits keep their weights after every step whose index is a power of two
(:func:`lineargan.driver.snapshot_points`: a geometric set chosen by the driver, so a fit of
any length gets a handful of points, dense where training changes fastest). This analysis
scores each snapshot and the weights each fit returned with Appx A's IoU, paper-schedule and
converged fits alike, so a reader sees whether each extractor had converged where its fit
stopped.

What is measured where the paper differs: the paper records "the mIoU of training samples"
(the authors' code averages the IoU of the batches it trains on over each epoch, a running
number on samples that are also the ones the step learns from). Here the snapshots are
evaluated on a fixed set of images after the fact: by default the first ``max_images`` images
of the training store (the paper's quantity, on fixed weights; as many as the evaluation store
holds, so both splits cost the same), or with ``split="eval"`` the evaluation store (held-out
images, so the last point is Table 1's mIoU exactly).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt, field_validator

from lineargan.config import ALL_EXTRACTORS, FitConfig, Frozen, RunConfig, fit_label

Chunk = tuple[list[np.ndarray], np.ndarray, np.ndarray]


class TrainingCurvesParams(Frozen):
    """Which fits (Table 1's, by default), scored on which images."""

    fits: tuple[FitConfig, ...] = tuple(FitConfig(extractor=e) for e in ALL_EXTRACTORS)
    split: Literal["eval", "train"] = Field(
        "train",
        description="images the snapshots are scored on: eval = the evaluation store (Table "
        "1's images); train = the first max_images training images (the paper's 'training "
        "mIoU', on fixed weights)",
    )
    max_images: PositiveInt | None = Field(
        None, description="score on the first max_images images of the split (None: all)"
    )

    @field_validator("fits")
    @classmethod
    def _check_fits(cls, fits: tuple[FitConfig, ...]) -> tuple[FitConfig, ...]:
        labels = [fit_label(f.extractor, f.method) for f in fits]
        if not labels:
            raise ValueError("Fig 8 needs at least one fit")
        if len(set(labels)) != len(labels):
            raise ValueError(f"each fit (extractor and method) may appear once, got {labels}")
        return fits

    @classmethod
    def for_run(
        cls, config: RunConfig, after: Mapping[str, Frozen] | None = None
    ) -> TrainingCurvesParams:
        """Table 1's fits of ``config`` (both row kinds), so the curves are those of its rows
        and no fit is trained twice, scored on as many training images as the run evaluates."""
        return cls(
            fits=tuple(config.table1_fits().values()),
            max_images=config.resolved_profile.n_eval,
        )


def first_images(chunks: Iterable[Chunk], limit: int | None) -> Iterator[Chunk]:
    """The chunks cut to their first ``limit`` images in all (None: every chunk whole)."""
    left = limit
    for feats, labels, detected in chunks:
        if left is None:
            yield feats, labels, detected
            continue
        if left <= 0:
            return
        k = min(left, len(labels))
        yield [f[:k] for f in feats], labels[:k], detected[:k]
        left -= k

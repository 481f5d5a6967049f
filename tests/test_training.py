"""The fit loop follows its schedule: every batch size in order, the iteration count, and the
learning-rate drop at the first iteration of ``lr_drop_epoch`` (Appx D)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineargan.config import Schedule
from lineargan.driver import drive
from lineargan.extractors import build_extractor
from lineargan.training import ScheduledAdam


class CountingSource:
    """A BatchSource of 1×1 features and labels that records every batch size it is asked for
    (the fit loop draws exactly one batch per iteration)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self._rng = np.random.default_rng(0)

    def next_batch(self, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
        self.sizes.append(batch_size)
        x = self._rng.standard_normal((batch_size, 1, 1, 1)).astype(np.float16)
        return [x], (x[:, 0] > 0).astype(np.uint8)


@pytest.fixture
def step_lrs(monkeypatch) -> list[float]:
    """The learning rate of every optimiser step the fit loop takes, in order.

    ``ScheduledAdam`` builds its optimiser as ``torch.optim.Adam(...)`` when it is created, so a recording
    subclass put in its place sees each step without any hook in the training code.
    """
    lrs: list[float] = []

    class RecordingAdam(torch.optim.Adam):
        def step(self, closure=None):
            lrs.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    return lrs


def run(schedule: Schedule) -> tuple[CountingSource, int]:
    model = build_extractor("LSE", n_class=2, dims=[1])
    source = CountingSource()
    result = drive(ScheduledAdam(model, source, schedule, 1, torch.device("cpu")), log_every=10**9)
    return source, result.iterations


def test_paper_schedule_batches_and_lr_drop(step_lrs):
    schedule = Schedule()  # 2 epochs at batch 1, 16 at batch 4, 32 at batch 64; 1,024 per epoch
    assert schedule.lr_drop_epoch == 20  # Appx D "at epoch 20" = the authors' MultiStepLR([20])
    source, iterations = run(schedule)

    # hand-counted: 2·1024/1 + 16·1024/4 + 32·1024/64 = 2048 + 4096 + 512 = 6656
    assert iterations == 6656
    assert source.sizes == [1] * 2048 + [4] * 4096 + [64] * 512
    assert len(step_lrs) == 6656  # every batch trains (no label is ignored)

    # epochs 0-19 take 2048 + 4096 + 2·16 = 6176 iterations; epoch 20 starts at iteration 6176,
    # two epochs into the batch-64 phase
    dropped = schedule.lr * schedule.lr_drop_factor
    assert step_lrs[:6176] == [schedule.lr] * 6176
    assert step_lrs[6176:] == [dropped] * 480
    assert dropped == pytest.approx(1e-4, rel=1e-12)


def test_lr_drop_inside_a_phase_uses_the_factor(step_lrs):
    """A drop epoch that is not a phase boundary, and a factor other than 1/10: the drop must
    follow the schedule's fields, not the batch size or a hard-coded 10."""
    schedule = Schedule(
        phases=((3, 2), (2, 4)), samples_per_epoch=8, lr=0.01, lr_drop_epoch=1, lr_drop_factor=0.5
    )
    source, iterations = run(schedule)
    assert iterations == 3 * 4 + 2 * 2 == 16
    assert source.sizes == [2] * 12 + [4] * 4
    assert step_lrs == [0.01] * 4 + [0.005] * 12

"""The paper's fit of every extractor (full and few-shot): Adam under a schedule, run by
:func:`lineargan.driver.drive`.

Batches come from any :class:`BatchSource` (in the pipeline: a stream over the Zarr cache), so
training never runs the generator or the segmenter. Loss: pixel cross-entropy against the
segmenter's labels at output resolution (Sec 3.1). Optimiser and schedule: Appx D.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from lineargan.config import Schedule
from lineargan.driver import FitMethod, FitResult, weights_copy
from lineargan.extractors.base import SemanticExtractor


class BatchSource(Protocol):
    def next_batch(self, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]: ...


def skip_samples(source: BatchSource, n: int) -> None:
    """Advance ``source`` by ``n`` samples: cheaply where it can (``skip``), else by drawing."""
    if n <= 0:
        return
    skip = getattr(source, "skip", None)
    if skip is not None:
        skip(n)
        return
    while n > 0:
        take = min(n, 1024)
        source.next_batch(take)
        n -= take


def to_tensors(
    feats: list[np.ndarray], labels: np.ndarray, device: torch.device
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """float16 numpy features → float32 tensors on ``device``; uint8 labels → int64."""
    non_blocking = device.type == "cuda"
    xs = [torch.from_numpy(f).to(device, non_blocking=non_blocking).float() for f in feats]
    y = torch.from_numpy(labels).to(device, non_blocking=non_blocking).long()
    return xs, y


class ScheduledAdam(FitMethod[FitResult]):
    """Adam under a :class:`Schedule` (Appx D), training ``model`` in place: each step draws
    the schedule's batch for that iteration from the source; the learning rate drops before the
    first step of ``lr_drop_epoch``. The fit's loss is the running mean of the batch losses,
    logged every 50 steps by default.

    ``amp`` uses bfloat16 autocast on CUDA (no effect on CPU). ``layer_loss_weight`` α > 0
    adds Appx I's per-layer terms (Eq. 8): CE(S, Y) + Σ_i α·CE(u↑(S_i), Y), with S = Σ_i S_i
    from ``model.layer_logits`` (additive extractors such as the LSE only). Label pixels equal
    to ``ignore_index`` do not contribute to the loss (category selection's "ignore" mode).

    Its state (model, optimiser with its learning rate, running loss, samples drawn) lets a
    resumed fit advance the source past the samples already drawn and end with the weights an
    uninterrupted fit would have.
    """

    log_every = 50

    def __init__(
        self,
        model: SemanticExtractor,
        source: BatchSource,
        schedule: Schedule,
        size: int,
        device: torch.device,
        *,
        seed: int = 0,
        amp: bool = True,
        layer_loss_weight: float = 0.0,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.model, self.source, self.schedule = model, source, schedule
        self.size, self.device = size, device
        self.layer_loss_weight, self.ignore_index = layer_loss_weight, ignore_index
        model.to(device).train()
        self.opt = torch.optim.Adam(model.param_groups(schedule.lr), betas=(0.9, 0.999))
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if amp and device.type == "cuda"
            else nullcontext()
        )
        self.batches: list[int] = []  # the batch size of every iteration, in order
        self.drop_at: int | None = None  # iterations before the lr drop
        for epoch, batch in schedule.epochs():
            if epoch == schedule.lr_drop_epoch:
                self.drop_at = len(self.batches)
            self.batches += [batch] * (schedule.samples_per_epoch // batch)
        self.total = len(self.batches)
        self.drawn = 0
        self.running: float | None = None

    @property
    def loss(self) -> float:
        return float("nan") if self.running is None else self.running

    def step(self, iteration: int) -> float | None:
        if iteration - 1 == self.drop_at:
            for group in self.opt.param_groups:
                group["lr"] *= self.schedule.lr_drop_factor
        batch = self.batches[iteration - 1]
        xs, y = to_tensors(*self.source.next_batch(batch), self.device)
        self.drawn += batch
        if bool((y != self.ignore_index).any()):
            loss = self._train_on(xs, y)
            self.running = loss if self.running is None else 0.98 * self.running + 0.02 * loss
        # else: every pixel is ignored (category selection's "ignore" mode): the loss would be
        # 0/0, so the batch teaches nothing and must not turn the running loss into NaN
        return self.running

    def _train_on(self, xs: list[torch.Tensor], y: torch.Tensor) -> float:
        """One Adam step on one batch; returns the loss."""
        alpha, ignore = self.layer_loss_weight, self.ignore_index
        with self.autocast:
            if alpha > 0:
                layers = self.model.layer_logits(xs, self.size)
                logits = torch.stack(layers).sum(0)
            else:
                logits = self.model(xs, self.size)
        loss = F.cross_entropy(logits.float(), y, ignore_index=ignore)
        if alpha > 0:
            for s in layers:
                loss = loss + alpha * F.cross_entropy(s.float(), y, ignore_index=ignore)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def state_dict(self) -> dict:
        return {
            "drawn": self.drawn,
            "running": self.running,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.drawn, self.running = int(state["drawn"]), state["running"]
        skip_samples(self.source, self.drawn)

    def weights(self) -> dict[str, torch.Tensor]:
        return weights_copy(self.model)

    def finish(self, result: FitResult) -> FitResult:
        self.model.eval()
        return result

"""The one fit loop for every extractor (full and, later, few-shot).

Batches come from any :class:`BatchSource` (in the pipeline: a stream over the Zarr cache), so
training never runs the generator or the segmenter. Loss: pixel cross-entropy against the
segmenter's labels at output resolution (Sec 3.1). Optimiser and schedule: Appx D.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lineargan.config import Schedule
from lineargan.extractors.base import SemanticExtractor


class BatchSource(Protocol):
    def next_batch(self, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]: ...


class FitCheckpoint(Protocol):
    """Where a fit keeps its partial state (``storage.checkpoints.PartialFit`` on disk), so a
    killed fit resumes instead of starting over. ``load`` returns None when there is nothing
    usable to resume from."""

    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...


ProgressFn = Callable[[int, int, float], None]  # (iteration, total, loss)


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


class QuietBar(tqdm):
    """A fit's terminal bar, without tqdm's monitor thread: the fit stays single-threaded."""

    monitor_interval = 0


@dataclass
class FitResult:
    iterations: int
    seconds: float
    final_loss: float
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: int = 0  # iteration a resumed fit started at (0: from scratch)


def to_tensors(
    feats: list[np.ndarray], labels: np.ndarray, device: torch.device
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """float16 numpy features → float32 tensors on ``device``; uint8 labels → int64."""
    non_blocking = device.type == "cuda"
    xs = [torch.from_numpy(f).to(device, non_blocking=non_blocking).float() for f in feats]
    y = torch.from_numpy(labels).to(device, non_blocking=non_blocking).long()
    return xs, y


def _step(
    model: SemanticExtractor,
    opt: torch.optim.Optimizer,
    xs: list[torch.Tensor],
    y: torch.Tensor,
    size: int,
    autocast,
    layer_loss_weight: float,
    ignore_index: int,
) -> float:
    """One Adam step on one batch; returns the loss."""
    with autocast:
        if layer_loss_weight > 0:
            layers = model.layer_logits(xs, size)
            logits = torch.stack(layers).sum(0)
        else:
            logits = model(xs, size)
    loss = F.cross_entropy(logits.float(), y, ignore_index=ignore_index)
    if layer_loss_weight > 0:
        for s in layers:
            loss = loss + layer_loss_weight * F.cross_entropy(
                s.float(), y, ignore_index=ignore_index
            )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def fit(
    model: SemanticExtractor,
    source: BatchSource,
    schedule: Schedule,
    size: int,
    device: torch.device,
    *,
    seed: int = 0,
    amp: bool = True,
    progress: ProgressFn | None = None,
    log_every: int = 50,
    layer_loss_weight: float = 0.0,
    ignore_index: int = -100,
    checkpoint: FitCheckpoint | None = None,
    save_every_s: float = 120.0,
) -> FitResult:
    """Train ``model`` in place with Adam under ``schedule``; returns timing and loss history.

    ``amp`` uses bfloat16 autocast on CUDA (no effect on CPU). ``layer_loss_weight`` α > 0
    adds Appx I's per-layer terms (Eq. 8): CE(S, Y) + Σ_i α·CE(u↑(S_i), Y), with S = Σ_i S_i
    from ``model.layer_logits`` (additive extractors such as the LSE only). Label pixels equal
    to ``ignore_index`` do not contribute to the loss (category selection's "ignore" mode).

    With a ``checkpoint``, the model, the optimiser (its learning rate included), the running
    loss, the RNG and the number of samples drawn are saved every ``save_every_s`` seconds; a
    later call with the same checkpoint resumes there and ends with the weights an
    uninterrupted fit would have (the source is advanced past the samples already drawn).
    """
    torch.manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.param_groups(schedule.lr), betas=(0.9, 0.999))
    total = schedule.iterations()
    saved = checkpoint.load() if checkpoint is not None else None
    start, drawn = 0, 0
    history: list[tuple[int, float]] = []
    running: float | None = None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        start, drawn, running = int(saved["iteration"]), int(saved["drawn"]), saved["running"]
        history = [(int(i), float(v)) for i, v in saved["history"]]
        skip_samples(source, drawn)
    last_save = time.monotonic()
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if amp and device.type == "cuda"
        else nullcontext()
    )
    it, t0 = 0, time.perf_counter()
    # a terminal bar only (under Dask workers stderr is not a TTY and `progress` is the logged
    # channel); it reads `running` and nothing else, so the fit is the same with or without it
    tty = sys.stderr.isatty()
    with QuietBar(total=total, desc="fit", unit="it", leave=False, disable=not tty) as bar:
        bar.update(start)
        for epoch, batch in schedule.epochs():
            steps = schedule.samples_per_epoch // batch
            if it + steps <= start:  # finished before the resume point
                it += steps
                continue
            if epoch == schedule.lr_drop_epoch and it >= start:  # (else: in the saved lr)
                for group in opt.param_groups:
                    group["lr"] *= schedule.lr_drop_factor
            for _ in range(steps):
                if it < start:
                    it += 1
                    continue
                xs, y = to_tensors(*source.next_batch(batch), device)
                drawn += batch
                it += 1
                if bool((y != ignore_index).any()):
                    loss = _step(model, opt, xs, y, size, autocast, layer_loss_weight, ignore_index)
                    running = loss if running is None else 0.98 * running + 0.02 * loss
                # else: every pixel is ignored (category selection's "ignore" mode): the loss would
                # be 0/0, so the batch teaches nothing and must not turn the running loss into NaN
                if not bar.disable:
                    if running is not None:
                        bar.set_postfix(loss=f"{running:.4f}", refresh=False)
                    bar.update(1)
                if (it % log_every == 0 or it == total) and running is not None:
                    history.append((it, running))
                    if progress is not None:
                        progress(it, total, running)
                if checkpoint is not None and time.monotonic() - last_save >= save_every_s:
                    checkpoint.save(
                        {
                            "iteration": it,
                            "drawn": drawn,
                            "running": running,
                            "history": history,
                            "model": model.state_dict(),
                            "optimizer": opt.state_dict(),
                            "rng": torch.get_rng_state(),
                        }
                    )
                    last_save = time.monotonic()
    model.eval()
    return FitResult(
        iterations=it,
        seconds=time.perf_counter() - t0,
        final_loss=float("nan") if running is None else running,
        loss_history=history,
        resumed_from=start,
    )

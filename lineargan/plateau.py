"""Nonlinear extractors trained until their held-out loss stops improving.

NSE-1 and NSE-2 are not convex, so no solver certifies an optimum; what can be said is that
more training no longer helps. :func:`fit_until_plateau` trains with Adam on batches of the
training split minus a held-out part, measures the held-out loss every ``check_every`` steps,
divides the learning rate by 10 the first time it stops improving (by a relative
``min_improvement`` for ``patience`` checks in a row) and stops the second time. The weights
returned are those of the best held-out loss. A fit that reaches ``max_iterations`` first is
reported as not converged.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from lineargan.config import SolverParams
from lineargan.convex import Certificate, as_tensors
from lineargan.extractors.base import SemanticExtractor
from lineargan.training import BatchSource, FitCheckpoint, ProgressFn, skip_samples, to_tensors

Chunks = Callable[[], Iterable[tuple[list[np.ndarray], np.ndarray]]]


@torch.no_grad()
def heldout_loss(
    model: SemanticExtractor,
    chunks: Chunks,
    size: int,
    device: torch.device,
    ignore_index: int = -100,
) -> float:
    """Mean pixel cross-entropy of ``model`` over every held-out pixel."""
    model.eval()
    total, pixels = 0.0, 0
    for feats, labels in chunks():
        xs, y = as_tensors(feats, labels, device)
        total += float(
            F.cross_entropy(model(xs, size), y, ignore_index=ignore_index, reduction="sum")
        )
        pixels += int((y != ignore_index).sum())
    model.train()
    return total / max(pixels, 1)


def fit_until_plateau(
    model: SemanticExtractor,
    source: BatchSource,
    holdout: Chunks,
    size: int,
    device: torch.device,
    params: SolverParams,
    *,
    seed: int = 0,
    progress: ProgressFn | None = None,
    ignore_index: int = -100,
    checkpoint: FitCheckpoint | None = None,
    save_every_s: float = 120.0,
) -> Certificate:
    """Train ``model`` in place until its held-out loss plateaus twice (see the module doc).

    With a ``checkpoint``, the weights, the optimiser, the best weights so far and the
    plateau counters are saved every ``save_every_s`` seconds (at held-out checks, where the
    counters are settled); a later call resumes there, the source advanced past the batches
    already drawn, and ends with the weights an uninterrupted fit would have.
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.param_groups(params.lr), betas=(0.9, 0.999))
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        best, best_state = float(saved["best"]), saved["best_state"]
        history = [(int(i), float(v)) for i, v in saved["history"]]
        step, stale, drops = int(saved["iteration"]), int(saved["stale"]), int(saved["drops"])
        skip_samples(source, step * params.batch)
    else:
        best = heldout_loss(model, holdout, size, device, ignore_index)
        best_state = copy.deepcopy(model.state_dict())
        history = [(0, best)]
        stale = drops = step = 0
    resumed_from, last_save = step, time.monotonic()
    converged = False
    while step < params.max_iterations:
        due = checkpoint is not None and time.monotonic() - last_save >= save_every_s
        if due and step % params.check_every == 0:  # at a check: the counters are settled
            checkpoint.save(
                {
                    "iteration": step,
                    "stale": stale,
                    "drops": drops,
                    "best": best,
                    "best_state": best_state,
                    "history": history,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                }
            )
            last_save = time.monotonic()
        xs, y = to_tensors(*source.next_batch(params.batch), device)
        step += 1
        if bool((y != ignore_index).any()):
            loss = F.cross_entropy(model(xs, size), y, ignore_index=ignore_index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if step % params.check_every:
            continue
        current = heldout_loss(model, holdout, size, device, ignore_index)
        history.append((step, current))
        if progress is not None:
            progress(step, params.max_iterations, current)
        elif sys.stderr.isatty():
            print(f"plateau fit: step {step}, held-out loss {current:.5f}", file=sys.stderr)
        if current < best * (1 - params.min_improvement):
            best, stale = current, 0
            best_state = copy.deepcopy(model.state_dict())
            continue
        stale += 1
        if stale < params.patience:
            continue
        if drops == 0:
            drops, stale = 1, 0
            for group in opt.param_groups:
                group["lr"] *= 0.1
            continue
        converged = True
        break
    model.load_state_dict(best_state)
    model.eval()
    return Certificate(
        converged=converged,
        iterations=step,
        evaluations=len(history),
        loss=best,
        grad_norm=float("nan"),
        rel_change=float("nan"),
        seconds=time.perf_counter() - t0,
        loss_history=history,
        resumed_from=resumed_from,
    )

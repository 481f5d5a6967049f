"""Nonlinear extractors trained until their held-out loss stops improving.

NSE-1 and NSE-2 are not convex, so no solver certifies an optimum; what can be said is that
more training no longer helps. :class:`PlateauAdam` trains with Adam on batches of the
training split minus a held-out part, measures the held-out loss every ``check_every`` steps,
divides the learning rate by 10 the first time it stops improving (by a relative
``min_improvement`` for ``patience`` checks in a row) and stops the second time. The weights
returned are those of the best held-out loss. A fit that reaches ``max_iterations`` first is
reported as not converged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from lineargan.config import SolverParams
from lineargan.convex import as_tensors
from lineargan.driver import Certificate, FitMethod, FitResult, weights_copy
from lineargan.extractors.base import SemanticExtractor
from lineargan.training import BatchSource, skip_samples, to_tensors

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


class PlateauAdam(FitMethod[Certificate]):
    """Train ``model`` in place until its held-out loss plateaus twice (see the module doc):
    Adam on batches from ``source``, a check of the loss over ``holdout`` every ``check_every``
    steps (the loss shown and logged), lr ÷10 at the first plateau, stop at the second.

    Saved only at checks, where the plateau counters are settled; its state keeps the best
    weights so far (which the fit returns), and a resumed fit advances the source past the
    batches already drawn and ends with the weights an uninterrupted fit would have.
    """

    desc = "plateau"

    def __init__(
        self,
        model: SemanticExtractor,
        source: BatchSource,
        holdout: Chunks,
        size: int,
        device: torch.device,
        params: SolverParams,
        *,
        seed: int = 0,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.model, self.source, self.holdout, self.params = model, source, holdout, params
        self.size, self.device, self.ignore_index = size, device, ignore_index
        model.to(device).train()
        self.opt = torch.optim.Adam(model.param_groups(params.lr), betas=(0.9, 0.999))
        self.total, self.save_stride = params.max_iterations, params.check_every
        self.loss = float("nan")  # the best held-out loss so far
        self.best_state: dict = {}
        self.stale = self.drops = 0
        self.converged = False

    def _heldout(self) -> float:
        return heldout_loss(self.model, self.holdout, self.size, self.device, self.ignore_index)

    def begin(self) -> float:
        self.loss = self._heldout()
        self.best_state = copy.deepcopy(self.model.state_dict())
        return self.loss

    def step(self, iteration: int) -> float | None:
        xs, y = to_tensors(*self.source.next_batch(self.params.batch), self.device)
        if bool((y != self.ignore_index).any()):
            loss = F.cross_entropy(self.model(xs, self.size), y, ignore_index=self.ignore_index)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        if iteration % self.params.check_every:
            return None
        current = self._heldout()
        if current < self.loss * (1 - self.params.min_improvement):
            self.loss, self.stale = current, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
            return current
        self.stale += 1
        if self.stale < self.params.patience:
            return current
        if self.drops == 0:
            self.drops, self.stale = 1, 0
            for group in self.opt.param_groups:
                group["lr"] *= 0.1
            return current
        self.converged = True
        return current

    def done(self) -> bool:
        return self.converged

    def state_dict(self) -> dict:
        return {
            "stale": self.stale,
            "drops": self.drops,
            "best": self.loss,
            "best_state": self.best_state,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.loss, self.best_state = float(state["best"]), state["best_state"]
        self.stale, self.drops = int(state["stale"]), int(state["drops"])
        skip_samples(self.source, int(state["iteration"]) * self.params.batch)

    def weights(self) -> dict[str, torch.Tensor]:
        """The current weights (what training has reached), not the best held-out ones the
        fit returns at its end."""
        return weights_copy(self.model)

    def finish(self, result: FitResult) -> Certificate:
        """Leave the model at its best held-out weights."""
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        return Certificate(
            **vars(result), converged=self.converged, evaluations=len(result.loss_history)
        )

"""The LSE's optimum, by a convex solver that stops on a certificate.

The LSE's logits are linear in its weights T (Eq. 1), so the mean pixel cross-entropy over the
training set is a convex function of T: it has one optimal value, and a quasi-Newton method on
the full training set reaches it in a few hundred iterations, where the paper's 6,656 Adam steps
on batches stop wherever the schedule ends. :class:`LBFGSSolve` runs full-batch L-BFGS (strong
Wolfe line search) and stops when both

- the gradient is small: ‖∇f‖_∞ ≤ ``grad_tol``, and
- the loss has stopped moving: (f_{k-1} − f_k) / f_k ≤ ``change_tol`` over the last iteration,

which is the certificate recorded with the fit. A fit that hits ``max_iterations`` first says
so (``converged`` False) instead of passing for converged.

Conditioning. Post-ReLU feature channels differ in scale by orders of magnitude between layers,
which slows any first-order or quasi-Newton method. The solver optimises V = T·diag(r), with r
the per-channel root-mean-square of the training features, and returns T = V·diag(1/r): the
same function class and the same optimum, reached in far fewer iterations.

Data. The objective is a sum over every training pixel; chunks come from a callable that yields
(features, labels) pairs, evaluated once per function evaluation. The caller decides whether
they are held in memory (float16, converted per chunk) or decoded from the store each time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from lineargan.config import SolverParams
from lineargan.driver import Certificate, FitMethod, FitResult, weights_copy
from lineargan.extractors.linear import LSE
from lineargan.training import to_tensors

Chunks = Callable[[], Iterable[tuple[list[np.ndarray], np.ndarray]]]


def channel_rms(
    chunks: Chunks, n_layers: int, device: torch.device
) -> tuple[list[torch.Tensor], int]:
    """Per-layer, per-channel root-mean-square of the features, and the number of labelled
    pixels (the loss's denominator); one pass over the data."""
    sums: list[torch.Tensor | None] = [None] * n_layers
    counts = [0] * n_layers
    pixels = 0
    for feats, labels in chunks():
        xs, y = as_tensors(feats, labels, device)
        for i, x in enumerate(xs):
            s = x.double().square().sum(dim=(0, 2, 3))
            sums[i] = s if sums[i] is None else sums[i] + s
            counts[i] += x.shape[0] * x.shape[2] * x.shape[3]
        pixels += int(y.numel())
    rms = [(s / c).sqrt().float().clamp(min=1e-6) for s, c in zip(sums, counts, strict=True)]
    return rms, pixels


class _Objective:
    """f(V) = mean cross-entropy of Σ_i u↑((V_i / r_i) x_i) over every training pixel
    (+ (l2/2)·‖V‖² when a ridge penalty is asked for).

    Called by L-BFGS as its closure. It remembers the last point it evaluated: L-BFGS
    re-evaluates the point its line search stopped at when it is called again, and that costs
    a comparison here instead of a pass over the data.

    The bilinear u↑ is applied as two small matrix products (A·S·Aᵀ, with A the 1-D linear
    interpolation matrix): the same map as ``F.interpolate(..., "bilinear")`` (to float
    rounding), at a third of the cost of its backward pass, which dominates otherwise.
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        rms: list[torch.Tensor],
        chunks: Chunks,
        pixels: int,
        size: int,
        device: torch.device,
        ignore_index: int,
        l2: float = 0.0,
    ) -> None:
        self.params, self.rms, self.chunks, self.l2 = params, rms, chunks, l2
        self.pixels, self.size, self.device, self.ignore_index = pixels, size, device, ignore_index
        self.evaluations = 0
        self._interp: dict[int, torch.Tensor] = {}
        self._cached: tuple[list[torch.Tensor], float, list[torch.Tensor]] | None = None

    def weights(self) -> list[torch.Tensor]:
        return [v / r for v, r in zip(self.params, self.rms, strict=True)]

    def _upsample(self, s: torch.Tensor) -> torch.Tensor:
        h = s.shape[-1]
        if h == self.size:
            return s
        if h not in self._interp:
            self._interp[h] = interpolation_matrix(h, self.size).to(self.device)
        a = self._interp[h]
        return a @ s @ a.T

    def __call__(self) -> float:
        if self._cached is not None and all(
            torch.equal(p, q) for p, q in zip(self.params, self._cached[0], strict=True)
        ):
            for p, g in zip(self.params, self._cached[2], strict=True):
                p.grad = g.clone()
            return self._cached[1]
        for p in self.params:
            p.grad = None
        total = 0.0
        for feats, labels in self.chunks():
            xs, y = as_tensors(feats, labels, self.device)
            logits = sum(
                self._upsample(F.conv2d(x, w[:, :, None, None]))
                for x, w in zip(xs, self.weights(), strict=True)
            )
            # the loss in float64: summed over a million pixels in float32 it cannot resolve the
            # last digits of progress, and the line search then stalls short of the certificate
            loss = F.cross_entropy(
                logits.double(), y, ignore_index=self.ignore_index, reduction="sum"
            )
            (loss / self.pixels).backward()
            total += float(loss.detach())
        value = total / self.pixels
        if self.l2 > 0:
            penalty = 0.5 * self.l2 * sum(p.square().sum() for p in self.params)
            penalty.backward()
            value += float(penalty.detach())
        self.evaluations += 1
        self._cached = (
            [p.detach().clone() for p in self.params],
            value,
            [p.grad.clone() for p in self.params],
        )
        return value


def interpolation_matrix(h: int, size: int) -> torch.Tensor:
    """(size × h) matrix A of 1-D linear interpolation, align_corners=False: for an (h × h)
    map S, A·S·Aᵀ is its bilinear resize to (size × size)."""
    eye = torch.eye(h)[:, None, :]
    return F.interpolate(eye, size=size, mode="linear", align_corners=False)[:, 0, :].T.contiguous()


def as_tensors(
    feats: list[np.ndarray | torch.Tensor], labels: np.ndarray | torch.Tensor, device: torch.device
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Chunks held as float32/int64 tensors pass through; float16 numpy arrays are converted."""
    if isinstance(labels, torch.Tensor):
        return list(feats), labels  # type: ignore[arg-type]
    return to_tensors(feats, labels, device)  # type: ignore[arg-type]


class LBFGSSolve(FitMethod[Certificate]):
    """Fit ``model``'s T to the optimum of the mean pixel cross-entropy over ``chunks``:
    full-batch L-BFGS, one iteration per step, stopping on the certificate (see the module doc).

    Starts from the model's current weights (the optimum does not depend on them) and writes
    the solution back into the model. Its state is the iterate and L-BFGS's curvature pairs,
    last direction and step: every function evaluation is a deterministic sum over the same
    chunks, so a resumed solve takes the same steps as an uninterrupted one.
    """

    desc = "L-BFGS"

    def __init__(
        self,
        model: LSE,
        chunks: Chunks,
        size: int,
        device: torch.device,
        params: SolverParams,
        *,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()  # the pass for the channel scales below is part of the solve
        self.model, self.params = model, params
        model.to(device)
        rms, pixels = channel_rms(chunks, len(model.dims), device)
        if pixels == 0:
            raise ValueError("no labelled pixels to fit")
        with torch.no_grad():
            init = [c.weight[:, :, 0, 0].float() for c in model.extractor]
            if model.weighting is not None:
                init = [w * t for w, t in zip(model.weighting(), init, strict=True)]
        self.variables = [
            (t * r).detach().clone().requires_grad_(True) for t, r in zip(init, rms, strict=True)
        ]
        self.objective = _Objective(
            self.variables, rms, chunks, pixels, size, device, ignore_index, params.l2
        )
        self.opt = torch.optim.LBFGS(
            self.variables,
            lr=1.0,
            max_iter=1,  # one iteration per step, so the certificate is checked after each
            max_eval=25,  # the line search's budget (its default, max_iter·5/4, would be 1 here)
            history_size=params.history,
            line_search_fn="strong_wolfe",
            tolerance_grad=-1.0,  # the certificate decides when to stop
            tolerance_change=-1.0,
        )
        self.total = params.max_iterations
        self.rel_change = float("inf")
        self.loss = self.grad_norm = float("nan")
        self.converged = False

    def _measure(self) -> None:
        self.loss, self.grad_norm = self.objective(), _grad_inf(self.variables)

    def _certified(self, first: bool) -> bool:
        """The certificate; before the first iteration there is no change yet, and the
        gradient alone decides."""
        p = self.params
        return self.grad_norm <= p.grad_tol and (first or 0 <= self.rel_change <= p.change_tol)

    def begin(self) -> float:
        self._measure()
        self.converged = self._certified(first=True)
        return self.loss

    def step(self, iteration: int) -> float:
        previous = self.loss
        self.opt.step(self.objective)
        self._measure()  # the point L-BFGS stopped at: cached, free
        self.rel_change = (previous - self.loss) / max(abs(self.loss), 1e-12)
        self.converged = self._certified(first=False)
        return self.loss

    def done(self) -> bool:
        return self.converged

    def state_dict(self) -> dict:
        return {
            "rel_change": self.rel_change,
            "evaluations": self.objective.evaluations,
            "variables": [v.detach().clone() for v in self.variables],
            "optimizer": self.opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for v, s in zip(self.variables, state["variables"], strict=True):
                v.copy_(s)
        self.opt.load_state_dict(state["optimizer"])
        self.rel_change = float(state["rel_change"])
        self.objective.evaluations = int(state["evaluations"])
        self._measure()
        self.converged = self._certified(first=int(state["iteration"]) == 0)

    def _write_solution(self) -> None:
        """Write the current iterate into the model (divided by its layer weights, if it has
        any, so the model's function is the iterate's either way). The solve never reads the
        model's weights, so writing them mid-solve changes no later step."""
        model = self.model
        with torch.no_grad():
            for conv, t in zip(model.extractor, self.objective.weights(), strict=True):
                conv.weight.copy_(t[:, :, None, None])
            if model.weighting is not None:
                for conv, w in zip(model.extractor, model.weighting(), strict=True):
                    conv.weight.div_(w)

    def weights(self) -> dict[str, torch.Tensor]:
        self._write_solution()
        return weights_copy(self.model)

    def finish(self, result: FitResult) -> Certificate:
        """Write the solution into the model: its function is the optimum."""
        self._write_solution()
        self.model.eval()
        return Certificate(
            **vars(result),
            converged=self.converged,
            evaluations=self.objective.evaluations,
            grad_norm=self.grad_norm,
            rel_change=self.rel_change,
        )


def _grad_inf(params: list[torch.Tensor]) -> float:
    return max(float(p.grad.abs().max()) for p in params)

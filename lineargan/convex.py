"""The LSE's optimum, by a convex solver that stops on a certificate.

The LSE's logits are linear in its weights T (Eq. 1), so the mean pixel cross-entropy over the
training set is a convex function of T: it has one optimal value, and a quasi-Newton method on
the full training set reaches it in a few hundred iterations, where the paper's 6,656 Adam steps
on batches stop wherever the schedule ends. :func:`solve_lse` runs full-batch L-BFGS (strong
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

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lineargan.config import SolverParams
from lineargan.extractors.linear import LSE
from lineargan.training import FitCheckpoint, ProgressFn, to_tensors

Chunks = Callable[[], Iterable[tuple[list[np.ndarray], np.ndarray]]]


@dataclass
class Certificate:
    """How a convex solve ended: what it reached, and whether that meets the tolerances."""

    converged: bool
    iterations: int
    evaluations: int
    loss: float
    grad_norm: float
    rel_change: float
    seconds: float
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: int = 0  # the iteration a killed solve was resumed at (0: ran from the start)


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


def solve_lse(
    model: LSE,
    chunks: Chunks,
    size: int,
    device: torch.device,
    params: SolverParams,
    *,
    progress: ProgressFn | None = None,
    ignore_index: int = -100,
    checkpoint: FitCheckpoint | None = None,
    save_every_s: float = 120.0,
) -> Certificate:
    """Fit ``model``'s T to the optimum of the mean pixel cross-entropy over ``chunks``.

    Starts from the model's current weights (the optimum does not depend on them); writes the
    solution back into the model (divided by its layer weights, if it has any, so the model's
    function is the optimum either way).

    With a ``checkpoint``, the iterate and L-BFGS's state (its curvature pairs, last direction
    and step) are saved every ``save_every_s`` seconds; a later call resumes there. Every
    function evaluation is a deterministic sum over the same chunks, so the resumed solve takes
    the same steps and ends with the same weights as an uninterrupted one.
    """
    t0 = time.perf_counter()
    model.to(device)
    rms, pixels = channel_rms(chunks, len(model.dims), device)
    if pixels == 0:
        raise ValueError("no labelled pixels to fit")
    with torch.no_grad():
        init = [c.weight[:, :, 0, 0].float() for c in model.extractor]
        if model.weighting is not None:
            init = [w * t for w, t in zip(model.weighting(), init, strict=True)]
    variables = [
        (t * r).detach().clone().requires_grad_(True) for t, r in zip(init, rms, strict=True)
    ]
    objective = _Objective(variables, rms, chunks, pixels, size, device, ignore_index, params.l2)
    opt = torch.optim.LBFGS(
        variables,
        lr=1.0,
        max_iter=1,  # one iteration per call, so the certificate is checked after each
        max_eval=25,  # the line search's budget (its default, max_iter·5/4, would be 1 here)
        history_size=params.history,
        line_search_fn="strong_wolfe",
        tolerance_grad=-1.0,  # the certificate below decides when to stop
        tolerance_change=-1.0,
    )
    saved = checkpoint.load() if checkpoint is not None else None
    it, rel_change, history = 0, float("inf"), []
    if saved is not None:
        with torch.no_grad():
            for v, s in zip(variables, saved["variables"], strict=True):
                v.copy_(s)
        opt.load_state_dict(saved["optimizer"])
        it, rel_change = int(saved["iteration"]), float(saved["rel_change"])
        history = [(int(i), float(v)) for i, v in saved["history"]]
        objective.evaluations = int(saved["evaluations"])
    resumed_from = it
    loss = objective()
    history = history or [(0, loss)]
    grad_norm = _grad_inf(variables)
    converged = grad_norm <= params.grad_tol and (it == 0 or 0 <= rel_change <= params.change_tol)
    last_save = time.monotonic()
    while not converged and it < params.max_iterations:
        opt.step(objective)
        it += 1
        new = objective()  # the point L-BFGS stopped at: cached, free
        rel_change = (loss - new) / max(abs(new), 1e-12)
        loss, grad_norm = new, _grad_inf(variables)
        history.append((it, loss))
        if progress is not None:
            progress(it, params.max_iterations, loss)
        converged = grad_norm <= params.grad_tol and 0 <= rel_change <= params.change_tol
        if checkpoint is not None and time.monotonic() - last_save >= save_every_s:
            checkpoint.save(
                {
                    "iteration": it,
                    "rel_change": rel_change,
                    "history": history,
                    "evaluations": objective.evaluations,
                    "variables": [v.detach().clone() for v in variables],
                    "optimizer": opt.state_dict(),
                }
            )
            last_save = time.monotonic()
    with torch.no_grad():
        for conv, t in zip(model.extractor, objective.weights(), strict=True):
            conv.weight.copy_(t[:, :, None, None])
        if model.weighting is not None:
            for conv, w in zip(model.extractor, model.weighting(), strict=True):
                conv.weight.div_(w)
    model.eval()
    return Certificate(
        converged=converged,
        iterations=it,
        evaluations=objective.evaluations,
        loss=loss,
        grad_norm=grad_norm,
        rel_change=rel_change,
        seconds=time.perf_counter() - t0,
        loss_history=history,
        resumed_from=resumed_from,
    )


def _grad_inf(params: list[torch.Tensor]) -> float:
    return max(float(p.grad.abs().max()) for p in params)

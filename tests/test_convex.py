"""The converged LSE: L-BFGS reaches a known optimum and stops on its certificate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lineargan.config import SolverParams
from lineargan.convex import LBFGSSolve, interpolation_matrix
from lineargan.driver import drive
from lineargan.extractors import build_extractor
from lineargan.extractors.base import upsample

CPU = torch.device("cpu")


def square_problem() -> tuple[
    list[tuple[list[np.ndarray], np.ndarray]], dict[int, np.ndarray], float
]:
    """Two 5×5 images (50 pixels) of two pixel types told apart by a one-hot feature: type A
    (25 pixels) labelled 0/1/2 as 15/7/3, type B (25) as 2/9/14. A linear map on one-hot
    features minimises the cross-entropy by predicting each type's empirical class
    frequencies, so the optimum is known in closed form. Returns (chunks, optimal class
    probabilities per type, optimal mean loss)."""
    counts = {0: (15, 7, 3), 1: (2, 9, 14)}
    cells = [(b, i, j) for b in range(2) for i in range(5) for j in range(5)]
    order = np.random.default_rng(1).permutation(len(cells))
    feats = np.zeros((2, 2, 5, 5), np.float16)
    labels = np.zeros((2, 5, 5), np.uint8)
    k = 0
    for kind, row in counts.items():
        for cls, n in enumerate(row):
            for _ in range(n):
                b, i, j = cells[order[k]]
                feats[b, kind, i, j] = 1
                labels[b, i, j] = cls
                k += 1
    probs = {kind: np.array(row) / sum(row) for kind, row in counts.items()}
    loss = -sum((np.array(row) * np.log(probs[kind])).sum() for kind, row in counts.items()) / 50
    chunks = [([feats[:1]], labels[:1]), ([feats[1:]], labels[1:])]
    return chunks, probs, float(loss)


def test_solver_reaches_the_closed_form_optimum():
    chunks, probs, best = square_problem()
    torch.manual_seed(0)
    model = build_extractor("LSE", n_class=3, dims=[2])
    params = SolverParams(grad_tol=1e-6, change_tol=1e-9)
    cert = drive(LBFGSSolve(model, lambda: iter(chunks), 5, CPU, params))
    assert cert.converged and cert.grad_norm <= 1e-6
    assert cert.final_loss == pytest.approx(best, abs=1e-6)
    # the fitted map predicts each pixel type's empirical class frequencies
    t = model.matrix().detach()
    for kind, p in probs.items():
        np.testing.assert_allclose(torch.softmax(t[:, kind], 0).numpy(), p, atol=1e-3)
    # and the model's own forward pass (F.interpolate, not the solver's matrices) agrees
    xs = [torch.from_numpy(np.concatenate([c[0][0] for c in chunks])).float()]
    y = torch.from_numpy(np.concatenate([c[1] for c in chunks])).long()
    assert F.cross_entropy(model(xs, 5), y).item() == pytest.approx(best, abs=1e-5)


def test_iteration_cap_is_reported_as_not_converged():
    chunks, _, _ = square_problem()
    model = build_extractor("LSE", n_class=3, dims=[2])
    cert = drive(LBFGSSolve(model, lambda: iter(chunks), 5, CPU, SolverParams(max_iterations=2)))
    assert cert.iterations == 2 and not cert.converged
    assert [i for i, _ in cert.loss_history] == [0, 1, 2]
    assert cert.loss_history[-1][1] < cert.loss_history[0][1]


def test_separable_data_needs_the_ridge_penalty_for_a_finite_optimum():
    """Pixels split exactly by the features: the plain loss has no minimiser (it falls toward
    0 as ‖T‖ grows, until float precision stops it); the ridge penalty gives a unique optimum
    with a bounded T, which the solver certifies."""
    feats = np.zeros((1, 2, 4, 4), np.float16)
    feats[0, 0, :2], feats[0, 1, 2:] = 1, 1
    labels = np.zeros((1, 4, 4), np.uint8)
    labels[0, 2:] = 1
    chunks = [([feats], labels)]
    plain_model, ridge_model = build_extractor("LSE", 2, [2]), build_extractor("LSE", 2, [2])
    plain = drive(LBFGSSolve(plain_model, lambda: iter(chunks), 4, CPU, SolverParams()))
    ridge = drive(LBFGSSolve(ridge_model, lambda: iter(chunks), 4, CPU, SolverParams(l2=0.1)))
    assert plain.final_loss < 1e-4
    assert ridge.converged and ridge.final_loss > 1e-3
    assert plain_model.matrix().norm() > 5 * ridge_model.matrix().norm()


def test_interpolation_matrices_are_the_bilinear_resize():
    x = torch.randn(3, 5, 8, 8)
    a = interpolation_matrix(8, 64)
    torch.testing.assert_close(a @ x @ a.T, upsample(x, 64), atol=1e-5, rtol=1e-5)
    assert math.isclose(float(a.sum(1).min()), 1.0, abs_tol=1e-6)  # rows are convex weights


def test_solution_is_written_back_through_the_layer_weights():
    """A softplus-weighted LSE gets T_i / w_i, so its function is the solver's optimum."""
    chunks, _, best = square_problem()
    model = build_extractor("LSE", n_class=3, dims=[2], layer_weights="softplus")
    cert = drive(LBFGSSolve(model, lambda: iter(chunks), 5, CPU, SolverParams(grad_tol=1e-6)))
    xs = [torch.from_numpy(np.concatenate([c[0][0] for c in chunks])).float()]
    y = torch.from_numpy(np.concatenate([c[1] for c in chunks])).long()
    assert F.cross_entropy(model(xs, 5), y).item() == pytest.approx(cert.final_loss, abs=1e-5)
    assert cert.final_loss == pytest.approx(best, abs=1e-5)

"""Plateau-stopped NSE fits: stop when the held-out loss stops improving, keep the best."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineargan.analyses.fewshot import FixedSamples
from lineargan.config import SolverParams
from lineargan.driver import drive
from lineargan.errors import LinearGanError
from lineargan.extractors import build_extractor
from lineargan.plateau import PlateauAdam, heldout_loss
from storage.feature_store import FeatureStore
from storage.target import Target
from tasks.fit import holdout_split

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def split(train_store_url):
    store = FeatureStore.open(Target(train_store_url), require_complete=True)
    train = store.read_samples(list(range(24)))
    held = store.read_samples(list(range(24, 32)))
    dims = [s[0] for s in store.spec.layer_shapes]
    return store.spec, dims, train, held


def test_fit_stops_on_a_plateau_and_keeps_the_best_weights(split):
    spec, dims, train, held = split
    torch.manual_seed(0)
    model = build_extractor("NSE-1", len(spec.class_names), dims)
    params = SolverParams(batch=8, lr=1e-2, check_every=5, patience=2, max_iterations=2000)
    cert = drive(PlateauAdam(model, FixedSamples(*train), lambda: iter([held]), 64, CPU, params))
    assert cert.converged and cert.iterations < params.max_iterations
    losses = [loss for _, loss in cert.loss_history]
    assert cert.final_loss == min(losses) < losses[0]
    # the returned model is the best checkpoint, not the last one
    assert heldout_loss(model, lambda: iter([held]), 64, CPU) == pytest.approx(
        cert.final_loss, rel=1e-6
    )
    # it stopped because the last `patience` checks gained nothing over the best
    assert all(loss >= cert.final_loss * (1 - params.min_improvement) for loss in losses[-2:])


def test_iteration_cap_is_not_converged(split):
    spec, dims, train, held = split
    model = build_extractor("NSE-1", len(spec.class_names), dims)
    params = SolverParams(batch=8, check_every=5, patience=50, max_iterations=10)
    cert = drive(PlateauAdam(model, FixedSamples(*train), lambda: iter([held]), 64, CPU, params))
    assert not cert.converged and cert.iterations == 10
    assert [s for s, _ in cert.loss_history] == [0, 5, 10]


def test_holdout_split():
    assert holdout_split(10, 0.1) == (list(range(9)), [9])
    assert holdout_split(32, 0.1) == (list(range(28)), [28, 29, 30, 31])
    assert holdout_split(2, 0.9) == ([0], [1])  # always one chunk left to train on
    with pytest.raises(LinearGanError, match="at least 2 chunks"):
        holdout_split(1, 0.1)
    assert not np.intersect1d(*holdout_split(7, 0.3)).size

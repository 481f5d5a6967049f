"""Semantic-Conditional Sampling on the embedded model: the initial candidate, the optimisation
and the two agreements."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineargan.analyses.scs import (
    SCSParams,
    agreement,
    best_candidates,
    candidate_latents,
    choose_targets,
    conditional_sample,
    pair_counts,
    pair_miou,
    pooled_miou,
)
from lineargan.cache import render_images
from lineargan.config import FitConfig, SolverParams
from lineargan.predictors import ExtractorPredictor, freeze
from storage.checkpoints import load_extractor
from storage.feature_store import FeatureStore
from storage.target import Target
from tasks.analyses.semantic_predictors import reference_labels
from tasks.fit import fit_extractor


@pytest.fixture(scope="module")
def lse_predictor(tmp_path_factory, train_store_url):
    """An LSE fitted to its optimum on the small real training store (a few seconds)."""
    cfg = FitConfig(
        extractor="LSE",
        method="converged",
        solver=SolverParams(grad_tol=1e-3, change_tol=1e-4, max_iterations=60),
    )
    meta = fit_extractor(train_store_url, cfg, str(tmp_path_factory.mktemp("lse")), "cpu")
    model, _ = load_extractor(meta["fit_dir"])
    return ExtractorPredictor(freeze(model), "LSE")


@pytest.fixture(scope="module")
def targets(eval_store_url):
    store = FeatureStore.open(Target(eval_store_url))
    ids = choose_targets(store.spec.n, store.detected_flags(), 3, "detected", 0)
    return torch.from_numpy(store.read_selection(ids, images=False).labels).long()


def test_counts_and_both_agreements_by_hand():
    target = np.array([[[1, 1], [0, 2]], [[1, 1], [1, 1]]])
    pred = np.array([[[1, 0], [0, 2]], [[2, 2], [1, 1]]])
    inter, union = pair_counts(target, pred, 3)
    assert inter.tolist() == [[1, 1, 1], [0, 2, 0]] and union.tolist() == [[2, 2, 1], [0, 4, 2]]
    # pair 0: class 1 = 1/2, class 2 = 1/1 -> 0.75; pair 1: class 1 = 2/4, class 2 = 0/2 -> 0.25
    assert pair_miou(inter, union) == pytest.approx([0.75, 0.25])
    # pooled: class 1 = 3/6, class 2 = 1/3
    assert pooled_miou(inter, union) == pytest.approx((0.5 + 1 / 3) / 2)
    assert agreement(inter, union) == pytest.approx({"paper": 0.5, "pooled": (0.5 + 1 / 3) / 2})


def test_best_candidate_is_the_most_agreeing_one():
    counts = torch.tensor([[3, 9, 9, 1], [0, 0, 0, 5]])
    assert best_candidates(counts).tolist() == [1, 3]  # the highest score, not the lowest


def test_chosen_initial_latent_maximises_agreement_under_p(generator, lse_predictor, targets):
    params = SCSParams(n_init=6, steps=0)
    pairs = [(0, 0), (1, 0), (2, 1)]
    run = conditional_sample(generator, lse_predictor, targets, pairs, params)
    cands = candidate_latents(generator, pairs, 6, params.seed)
    for j, (t, _) in enumerate(pairs):
        with torch.no_grad():
            pred = lse_predictor(generator(cands[j]), 64).argmax(1)
        agree = (pred == targets[t]).flatten(1).sum(1)
        assert int(run.chosen[j]) == int(agree.argmax())
        assert torch.equal(run.initial[j], cands[j, int(agree.argmax())])
        assert run.initial_pixels[j] == pytest.approx(float(agree.max()) / 64**2)
    assert torch.equal(run.final, run.initial)  # no steps: nothing moves


def test_candidates_do_not_depend_on_batching(generator):
    both = candidate_latents(generator, [(0, 0), (4, 1)], 3, seed=5)
    alone = candidate_latents(generator, [(4, 1)], 3, seed=5)
    assert torch.equal(both[1], alone[0])


def test_scs_raises_agreement_over_its_initialisation(generator, segmenter, lse_predictor, targets):
    params = SCSParams(protocol="authors", n_init=10, steps=30)
    pairs = [(t, s) for t in range(len(targets)) for s in range(2)]
    run = conditional_sample(generator, lse_predictor, targets, pairs, params)
    assert (run.loss_final < run.loss_initial).all()
    goal = targets.numpy()[[t for t, _ in pairs]]
    before = reference_labels(segmenter, render_images(generator, run.initial, 16))
    after = reference_labels(segmenter, render_images(generator, run.final, 16))
    a0 = np.nanmean(pair_miou(*pair_counts(goal, before, 7)))
    a1 = np.nanmean(pair_miou(*pair_counts(goal, after, 7)))
    assert a1 > a0 + 0.02, (a0, a1)


def test_protocols_switch_every_setting_at_once():
    paper, authors = SCSParams(), SCSParams(protocol="authors")
    assert (paper.schedule().lr, paper.candidates(), paper.schedule().neighbor_weight) == (
        1e-3,
        10,
        0.0,
    )
    assert (authors.schedule().lr, authors.candidates(), authors.schedule().neighbor_weight) == (
        1e-2,
        100,
        1e-3,
    )
    assert SCSParams(protocol="authors", lr=0.5).schedule().lr == 0.5  # an explicit value wins


def test_batched_adam_equals_separate_runs(generator, lse_predictor, targets):
    """Summed per-latent losses + per-coordinate Adam: a batch takes each latent's own steps."""
    from lineargan.latent_search import LatentSchedule, optimize_latents, semantic_loss

    z0 = generator.sample_latents(3, seed=11)
    owner = torch.tensor([0, 1, 2])
    loss = semantic_loss(lse_predictor, targets, owner)
    together = optimize_latents(generator, z0, loss, LatentSchedule(steps=3, batch=3))
    apart = optimize_latents(generator, z0, loss, LatentSchedule(steps=3, batch=1))
    torch.testing.assert_close(together.latents, apart.latents, rtol=0, atol=1e-6)
    torch.testing.assert_close(together.final_loss, apart.final_loss, rtol=0, atol=1e-6)

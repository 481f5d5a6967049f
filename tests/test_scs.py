"""Semantic-Conditional Sampling on the embedded model: the initial candidate, the optimisation,
each protocol's settings and the agreements (Eq. 7, the authors' aggregate_iou, pooled)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lineargan.analyses.scs import (
    SCSParams,
    agreement,
    authors_miou,
    best_candidates,
    candidate_latents,
    choose_targets,
    class_pixels,
    conditional_sample,
    pair_counts,
    pair_miou,
    pooled_miou,
    summarize_scs,
)
from lineargan.analyses.sie import SIEParams
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


# Three (target, sample) pairs of 2×3 masks, classes 0 (background) to 3.
TARGETS = np.array(
    [
        [[1, 1, 2], [0, 0, 0]],  # A
        [[1, 1, 1], [3, 3, 0]],  # B
        [[2, 0, 0], [0, 0, 0]],  # C
    ]
)
SAMPLES = np.array(
    [
        [[1, 0, 2], [2, 0, 0]],  # A: class 1 1/2, class 2 1/2, class 3 in neither mask
        [[1, 1, 0], [0, 0, 0]],  # B: class 1 2/3, class 2 in neither, class 3 target only: 0
        [[2, 2, 0], [0, 0, 0]],  # C: class 2 1/2, classes 1 and 3 in neither mask
    ]
)


def _counts(targets: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, ...]:
    return (*pair_counts(targets, samples, 4), class_pixels(samples, 4))


def test_counts_by_hand():
    inter, union, predicted = _counts(TARGETS, SAMPLES)
    assert inter.tolist() == [[2, 1, 1, 0], [1, 2, 0, 0], [4, 0, 1, 0]]
    assert union.tolist() == [[4, 2, 2, 0], [4, 3, 0, 2], [5, 0, 2, 0]]
    assert predicted.tolist() == [[3, 1, 2, 0], [4, 2, 0, 0], [4, 0, 2, 0]]


def test_eq7_authors_and_pooled_agreements_by_hand():
    inter, union, predicted = _counts(TARGETS, SAMPLES)
    # Eq. 7: per pair, the mean IoU over the non-background classes in either mask (a class
    # in one mask only scores 0, one in neither is left out); then the mean over pairs
    pair_a = (1 / 2 + 1 / 2) / 2
    pair_b = (2 / 3 + 0) / 2
    pair_c = (1 / 2) / 1
    assert pair_miou(inter, union) == pytest.approx([pair_a, pair_b, pair_c])
    eq7 = (pair_a + pair_b + pair_c) / 3
    # the authors' evaluate.py: iou(absent_score=-1, ignore_index=0) per pair, num_classes =
    # sample_labels.max() + 1 = 3 (no sample shows class 3, so class 3 is not scored at all);
    # aggregate_iou: each class's mean over the pairs where it is not -1, then the class mean
    class_1 = (1 / 2 + 2 / 3) / 2  # pairs A and B
    class_2 = (1 / 2 + 1 / 2) / 2  # pairs A and C
    authors = (class_1 + class_2) / 2
    # pooled: Σ∩ / Σ∪ per class over all pairs (class 3: 0 / 2), then the class mean
    pooled = ((1 + 2) / (2 + 3) + (1 + 1) / (2 + 2) + 0 / 2) / 3
    assert len({round(v, 6) for v in (eq7, authors, pooled)}) == 3  # three different numbers
    assert agreement(inter, union, predicted) == pytest.approx(
        {"paper": eq7, "authors": authors, "pooled": pooled}
    )
    assert pooled_miou(inter, union) == pytest.approx(pooled)


def test_authors_score_a_class_once_some_sample_shows_it():
    samples = SAMPLES.copy()
    samples[1, 1, 0] = 3  # B's sample now has one pixel of class 3: IoU 1/2 there
    inter, union, predicted = _counts(TARGETS, samples)
    class_1, class_2, class_3 = (1 / 2 + 2 / 3) / 2, (1 / 2 + 1 / 2) / 2, 1 / 2
    assert authors_miou(inter, union, predicted) == pytest.approx((class_1 + class_2 + class_3) / 3)
    # C's sample shows class 3, its target does not: that pair's IoU 0 counts for class 3
    samples[2, 1, 2] = 3
    inter, union, predicted = _counts(TARGETS, samples)
    class_3 = (1 / 2 + 0) / 2  # pairs B and C
    assert authors_miou(inter, union, predicted) == pytest.approx((class_1 + class_2 + class_3) / 3)


def test_table3_reports_each_repeat_aggregated_then_averaged():
    inter, union, predicted = _counts(TARGETS, SAMPLES)
    rows = pd.DataFrame(
        {
            "predictor": "LSE",
            "n_shot": 4,
            "repeat": [0, 0, 1],  # repeat 0: pairs A and B; repeat 1: pair C
            "target": [0, 1, 0],  # the intervals resample targets
            "agreement_initial": [0.1, 0.2, 0.3],
            "inter": list(inter),
            "union": list(union),
            "predicted": list(predicted),
        }
    )
    first = agreement(inter[:2], union[:2], predicted[:2])
    second = agreement(inter[2:], union[2:], predicted[2:])
    # repeat 0: class 1 over A and B, class 2 over A only; repeat 1: class 2 over C only
    assert first["authors"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 / 2) / 2)
    assert second["authors"] == pytest.approx(1 / 2)
    for protocol, headline in (("paper", "paper"), ("authors", "authors")):
        row = summarize_scs(rows, protocol).iloc[0]
        assert row["headline"] == headline and row["repeats"] == 2
        for column, name in (("agreement", "paper"), ("authors", "authors"), ("pooled", "pooled")):
            assert row[column] == pytest.approx((first[name] + second[name]) / 2)
        spread = abs(first["authors"] - second["authors"]) / 2
        assert row["authors_max_dev"] == pytest.approx(spread)


def _their_evaluation(targets: np.ndarray, samples: np.ndarray) -> float:
    """The authors' pipeline as their code reads, written out independently: per pair,
    pytorch-lightning's iou(dt, gt, num_classes=samples.max() + 1, ignore_index=0,
    absent_score=-1) (labels at or above num_classes go to a dropped extra bin), then
    aggregate_iou: per class the mean of the values > -0.1, -1 for a class with none, and the
    mean of the classes > -0.1."""
    n_class = int(samples.max()) + 1
    scores = []
    for gt, dt in zip(targets, samples, strict=True):
        gt, dt = np.minimum(gt.ravel(), n_class), np.minimum(dt.ravel(), n_class)
        row = []
        for c in range(1, n_class):  # class 0 is the ignore_index
            tp = int(((dt == c) & (gt == c)).sum())
            fp = int(((dt == c) & (gt != c)).sum())
            fn = int(((dt != c) & (gt == c)).sum())
            row.append(-1.0 if (gt == c).sum() + tp + fp == 0 else tp / (tp + fp + fn))
        scores.append(row)
    per_class = []
    for column in np.array(scores).T:
        kept = column[column > -0.1]
        per_class.append(-1.0 if len(kept) == 0 else kept.mean())
    per_class = np.array(per_class)
    return float(per_class[per_class > -0.1].mean())


@pytest.mark.parametrize("seed", range(20))
def test_authors_agreement_equals_their_pipeline_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    n_class = 6
    targets = rng.integers(0, n_class, size=(7, 5, 5))
    # samples with a random highest class, so some classes are beyond their num_classes
    samples = rng.integers(0, rng.integers(2, n_class + 1), size=(7, 5, 5))
    inter, union = pair_counts(targets, samples, n_class)
    expected = _their_evaluation(targets, samples)
    assert authors_miou(inter, union, class_pixels(samples, n_class)) == pytest.approx(expected)


def test_table3_leads_with_the_protocols_aggregation():
    from tasks.analyses.scs.render import render_table3

    summary = pd.DataFrame(
        {
            "predictor": ["UNet", "LSE"],
            "n_shot": pd.array([None, 4], dtype="Int64"),
            "repeats": [1, 2],
            "pairs": [6, 6],
            "agreement": [0.4, 0.3],
            "max_dev": [0.0, 0.01],
            "authors": [0.5, 0.35],
            "authors_max_dev": [0.0, 0.02],
            "pooled": [0.45, 0.33],
            "pooled_max_dev": [0.0, 0.01],
            "agreement_initial": [0.2, 0.1],
            "headline": "authors",
        }
    )
    samples = pd.DataFrame(
        {
            "protocol": ["authors"],
            "edit_space": ["z"],
            "target": [0],
            "sample": [0],
            "n_init": [100],
        }
    )
    md = render_table3({"scs_summary": summary, "scs_samples": samples})
    header = md.splitlines()[0]
    assert header.index("aggregate_iou, authors") < header.index("Eq. 7, paper")
    rows = {
        cells[0]: cells[1:]
        for line in md.splitlines()
        if line.startswith("| SCS")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert rows["SCS (4-shot LSE)"][:3] == ["35.0 ± 2.0", "30.0 ± 1.0", "10.0"]
    assert list(rows) == ["SCS (4-shot LSE)", "SCS (UNet)"]  # few-shot N first, then P
    # a table written before the authors' aggregation was stored still renders, named honestly
    old = summary.drop(columns=["authors", "authors_max_dev"]).assign(headline="pooled")
    md = render_table3({"scs_summary": old, "scs_samples": samples.assign(protocol="authors")})
    assert "pooled Σ∩/Σ∪, neither's" in md and "neither protocol's aggregation" in md


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
    settings = lambda p, vectors=1: (  # noqa: E731
        p.schedule(vectors).lr,
        p.candidates(),
        p.schedule(vectors).neighbor_weight,
        p.schedule(vectors).prior_weight,
        p.space(),
    )
    assert settings(paper) == settings(paper, 18) == (1e-3, 10, 0.0, 0.0, None)
    # the authors' manipulation/scs.py: CE + 1e-3‖z − z0‖² + 1e-3‖z‖²/L, one z (L = 1)
    assert settings(authors) == (1e-2, 100, 1e-3, 1e-3, "z")
    assert settings(authors, 18)[3] == pytest.approx(1e-3 / 18)  # a stacked latent: ÷ L
    assert SCSParams(protocol="authors", lr=0.5).schedule().lr == 0.5  # an explicit value wins
    assert SCSParams(protocol="authors", edit_space="mixwp").space() == "mixwp"
    scenes = {"paper": 100, "authors": 10}  # a bedroom recipe's candidates
    assert SCSParams(n_init_per_protocol=scenes).candidates() == 100
    assert SCSParams(protocol="authors", n_init_per_protocol=scenes).candidates() == 10
    with pytest.raises(ValueError, match="authors"):
        SCSParams(n_init_per_protocol={"paper": 10})


def test_authors_sie_divides_the_prior_by_the_latent_vectors():
    """manipulation/sie.py: priorloss = 1e-3 * (z ** 2).sum() / z.shape[0], one z per layer."""
    assert SIEParams(protocol="authors").schedule(14).prior_weight == pytest.approx(1e-3 / 14)
    assert SIEParams(protocol="authors").schedule(1).prior_weight == pytest.approx(1e-3)
    assert SIEParams().schedule(14).prior_weight == pytest.approx(1e-3)  # the paper's ‖z‖²


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

"""Table 3's intervals (a paired bootstrap over targets), the Fig 6 layout, and the SCS
experiments of issue #26 (matched baselines, oracle / no-optimisation arms) on the small real
stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lineargan.analyses.fewshot import FewShotParams, choose_train_indices
from lineargan.analyses.scs import (
    SCSParams,
    agreement,
    class_pixels,
    oracle_candidates,
    pair_counts,
    paired_intervals,
    ratio_agreement,
    resample_weights,
    summarize_scs,
    target_terms,
)
from lineargan.baseline import UNetParams
from lineargan.errors import LinearGanError
from storage.tables import read_table_part
from tasks.analyses.runner import run_and_finish
from tasks.analyses.scs_experiments.science import (
    SCSExperimentParams,
    match_steps,
    matching_images,
)
from tests.test_scs import SAMPLES, TARGETS

FEWSHOT = FewShotParams(shots=(1, 4), iterations=(20, 20), repeats=2)
UNET = UNetParams(steps=20, batch=8, width=8)


def _terms(owner: np.ndarray, n_targets: int, aggregation: str):
    inter, union = pair_counts(TARGETS, SAMPLES, 4)
    return target_terms(inter, union, class_pixels(SAMPLES, 4), owner, n_targets, aggregation)


@pytest.mark.parametrize("aggregation", ["paper", "authors"])
def test_target_terms_give_the_headline_and_a_resample_is_a_weighting(aggregation):
    inter, union = pair_counts(TARGETS, SAMPLES, 4)
    predicted = class_pixels(SAMPLES, 4)
    owner = np.array([0, 0, 1])  # pairs A and B share target 0, pair C is target 1
    num, den = _terms(owner, 2, aggregation)
    whole = ratio_agreement(num, den, np.ones((1, 2)))[0]
    assert whole == pytest.approx(agreement(inter, union, predicted)[aggregation])
    # drawing target 0 twice and target 1 never = scoring pairs A, B, A, B
    twice = ratio_agreement(num, den, np.array([[2.0, 0.0]]))[0]
    dup = np.array([0, 1, 0, 1])
    assert twice == pytest.approx(agreement(inter[dup], union[dup], predicted[dup])[aggregation])


def test_resample_weights_draw_every_target_count_once_per_resample():
    w = resample_weights(7, 500, seed=3)
    assert w.shape == (500, 7) and (w.sum(1) == 7).all()
    assert np.array_equal(w, resample_weights(7, 500, seed=3))
    assert not np.array_equal(w, resample_weights(7, 500, seed=4))
    assert abs(w.mean() - 1) < 0.05  # each target drawn once per resample on average


def _one(values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-target terms of an Eq. 7 agreement whose per-target values are ``values``."""
    return [(values[:, None].astype(float), np.ones((len(values), 1)))]


def test_paired_intervals_contain_the_mean_and_pair_the_differences():
    rng = np.random.default_rng(0)
    hard = rng.uniform(0.1, 0.9, 60)  # targets differ a lot in how hard they are
    terms = {"base": _one(hard), "better": _one(hard + 0.02), "same": _one(hard.copy())}
    ci = paired_intervals(terms, "base", resample_weights(60, 1000, 0))
    # each agreement alone: an interval ~±6 points around its mean
    assert ci["base"].lo < hard.mean() < ci["base"].hi and ci["base"].hi - ci["base"].lo > 0.08
    # the difference is exactly 2 points on every target: paired resampling leaves no
    # spread (unpaired resampling would give an interval as wide as the agreements')
    assert ci["better"].diff == pytest.approx(0.02)
    assert ci["better"].diff_lo == pytest.approx(0.02) and ci["better"].diff_hi == pytest.approx(
        0.02
    )
    assert ci["same"].diff_lo == pytest.approx(0) and ci["same"].diff_hi == pytest.approx(0)
    # a noisy difference whose mean is +5 points: the interval excludes 0 and contains 0.05
    noisy = {"base": _one(hard), "p": _one(hard + 0.05 + rng.normal(0, 0.03, 60))}
    d = paired_intervals(noisy, "base", resample_weights(60, 1000, 0))["p"]
    assert 0 < d.diff_lo < 0.05 < d.diff_hi


def test_table3_summary_keeps_its_numbers_and_adds_intervals():
    inter, union = pair_counts(TARGETS, SAMPLES, 4)
    predicted = class_pixels(SAMPLES, 4)
    rows = pd.DataFrame(
        {
            "predictor": ["LSE"] * 3 + ["UNet"] * 3,
            "n_shot": [4] * 3 + [None] * 3,
            "repeat": [0] * 3 + [None] * 3,
            "target": [0, 1, 2] * 2,
            "agreement_initial": 0.1,
            "inter": list(inter) * 2,
            "union": list(union) * 2,
            "predicted": list(predicted) * 2,
        }
    )
    summary = summarize_scs(rows, "paper", n_boot=200)
    for row in summary.itertuples():
        assert row.agreement == pytest.approx(agreement(inter, union, predicted)["paper"])
        assert row.headline_lo <= row.agreement <= row.headline_hi
        assert row.vs_baseline == 0 and row.vs_baseline_lo == row.vs_baseline_hi == 0
        assert row.bootstrap == 200


def test_oracle_picks_the_candidate_the_reference_scores_best():
    # 2 pairs × 3 candidates of TARGETS[0] vs three sample masks
    samples = np.stack([SAMPLES[0], TARGETS[0], SAMPLES[2]])
    inter, union = pair_counts(np.stack([TARGETS[0]] * 3), samples, 4)
    stacked = lambda a: np.stack([a, a[::-1]])  # noqa: E731
    assert oracle_candidates(stacked(inter), stacked(union)).tolist() == [1, 1]


def test_match_steps_picks_the_closest_accuracy():
    weak = {4: 0.05, 8: 0.12, 16: 0.22, 32: 0.31}
    assert match_steps({1: 0.09, 4: 0.20, 16: 0.33}, weak) == {1: 8, 4: 16, 16: 32}


def test_accuracies_are_matched_on_training_images_no_predictor_saw():
    unet = UNetParams(holdout=0.25)
    fewshot = FewShotParams(shots=(1, 4), iterations=(5, 5), repeats=2, seed=3)
    ids = matching_images(64, unet, fewshot)
    assert set(ids) <= set(range(48, 64))  # the UNet's held-out part (its last quarter)
    for n in fewshot.shots:  # no few-shot LSE's training image
        for row in choose_train_indices(64, n, fewshot.repeats, fewshot.seed):
            assert not set(row) & set(ids)
    assert len(ids) >= 16 - 10  # at most 2 × (1 + 4) drawn images fall there
    with pytest.raises(LinearGanError, match="nothing to match"):
        matching_images(64, UNetParams(holdout=0), fewshot)


def test_experiments_separate_choice_from_optimisation(ctx):
    params = SCSExperimentParams(
        scs=SCSParams(
            targets=3,
            samples=1,
            steps=3,
            shots=(1, 4),
            repeats=1,
            fewshot=FEWSHOT,
            unet=UNET,
            bootstrap=100,
        ),
        unet_seeds=(0,),
        matched_steps=(2, 6),
        matched_seeds=(0,),
    )
    result = run_and_finish("scs_experiments", ctx, params)
    samples = read_table_part(ctx.results_root, "scs_experiment_samples", result.key)
    summary = read_table_part(ctx.results_root, "scs_experiment_summary", result.key)
    predictors = read_table_part(ctx.results_root, "scs_experiment_predictors", result.key)
    assert set(samples["protocol"]) == {"paper", "authors"}
    assert set(samples["arm"]) == {"chosen", "optimised", "oracle", "first"}
    # the oracle chooses among the candidates every P chooses from: never below any P's choice
    by_pair = samples.set_index(["protocol", "target", "sample"])
    oracle = by_pair[by_pair["arm"] == "oracle"]["agreement"]
    chosen = by_pair[by_pair["arm"] == "chosen"]["agreement"]
    assert (chosen <= oracle.reindex(chosen.index) + 1e-12).all()
    assert set(samples.groupby("protocol")["n_init"].first().items()) == {
        ("paper", 10),
        ("authors", 100),
    }
    # a matched UNet per N, among the weakened ones trained
    matched = predictors[predictors["n_shot"].notna() & (predictors["family"] == "UNet-weakened")]
    assert sorted(matched["n_shot"]) == [1, 4] and set(matched["steps"]) <= {2, 6}
    for row in summary.itertuples():
        assert row.lo <= row.agreement + 1e-12 and row.agreement <= row.hi + 1e-12
    gain = summary[summary["arm"] == "gain"].set_index(["protocol", "family", "n_shot"])
    opt = summary[summary["arm"] == "optimised"].set_index(["protocol", "family", "n_shot"])
    ch = summary[summary["arm"] == "chosen"].set_index(["protocol", "family", "n_shot"])
    assert np.allclose(gain["agreement"], (opt["agreement"] - ch["agreement"])[gain.index])
    # each LSE is compared with the UNet matched to it, paired, in every arm
    lse = summary[summary["family"] == "LSE"]
    assert lse["vs_matched"].notna().all() and (lse["vs_matched_lo"] <= lse["vs_matched_hi"]).all()
    assert summary[summary["family"] != "LSE"]["vs_matched"].isna().all()
    assert "UNet matched to 4-shot" in result.markdown and "oracle" in result.markdown


def test_scs_figure_has_a_row_per_target(ctx):
    params = SCSParams(
        targets=2,
        samples=2,
        steps=2,
        shots=(1,),
        repeats=1,
        fewshot=FEWSHOT,
        unet=UNET,
        figure_targets=2,
    )
    result = run_and_finish("scs", ctx, params)
    assert "95 % interval (targets)" in result.markdown and "vs baseline [95 %]" in result.markdown
    with Image.open(result.figures[0]) as figure:
        width, height = figure.size
    # tile_grid at 2×: each cell is a 64-px sample over its 64-px mask + 4 px of padding,
    # under a 16-px title row; columns: the target, then 2 samples × (LSE, UNet)
    side = 2 * 64
    assert height == 16 + 2 * (2 * side + 4)
    assert (width - 5 * (side + 4)) < 120  # the rest is the row-title column

"""Typed configuration: profiles, the Appx D schedule, validation and config hashes."""

from __future__ import annotations

import pydantic
import pytest

from lineargan.config import (
    PROFILES,
    DatasetConfig,
    FitConfig,
    RunConfig,
    Schedule,
    get_profile,
)
from lineargan.errors import LinearGanError, UnknownNameError


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Fix:" in msg, msg
    return msg


def test_unknown_profile_is_one_line_error_listing_profiles():
    with pytest.raises(UnknownNameError) as err:
        get_profile("fast")
    msg = one_line(err)
    assert "'fast'" in msg
    for name in ("smoke", "quick", "paper"):
        assert name in msg


def test_run_config_rejects_unknown_profile():
    with pytest.raises(UnknownNameError) as err:
        RunConfig(profile="fast")
    one_line(err)


def test_run_config_rejects_unknown_models():
    with pytest.raises(UnknownNameError) as err:
        RunConfig(generator="biggan")
    assert "dcgan-digiface" in one_line(err)
    with pytest.raises(UnknownNameError) as err:
        DatasetConfig(segmenter="face-parsing")
    assert "dlib-face68" in one_line(err)


def test_paper_schedule_has_6656_iterations():
    s = Schedule()
    assert s.iterations() == 6656  # 2·1024/1 + 16·1024/4 + 32·1024/64 (Appx D)
    assert s.n_epochs == 50
    epochs = s.epochs()
    assert epochs[0] == (0, 1) and epochs[2] == (2, 4) and epochs[18] == (18, 64)
    assert s.lr == 1e-3 and s.lr_drop_epoch == 20  # lr/10 at epoch 20 (Appx D, MultiStepLR([20]))
    assert [b for _, b in epochs[18 : s.lr_drop_epoch + 1]] == [64, 64, 64]


def test_small_schedule_caps_batch_at_epoch_size():
    s = Schedule(samples_per_epoch=8)
    assert {b for _, b in s.epochs()} == {1, 4, 8}
    assert s.iterations() == 2 * 8 + 16 * 2 + 32 * 1


def test_train_seed_equal_eval_seed_rejected():
    with pytest.raises(LinearGanError) as err:
        RunConfig(train_seed=3, eval_seed=3)
    assert "seed" in one_line(err)


def test_no_extractors_rejected():
    with pytest.raises(LinearGanError):
        RunConfig(extractors=())


def test_invalid_fields_rejected():
    with pytest.raises(pydantic.ValidationError):
        DatasetConfig(n=0)
    with pytest.raises(pydantic.ValidationError):
        DatasetConfig(chunk_size=8192)
    with pytest.raises(pydantic.ValidationError):
        DatasetConfig(split="test")
    with pytest.raises(pydantic.ValidationError):
        FitConfig(extractor="NSE-3")
    with pytest.raises(pydantic.ValidationError):
        Schedule(lr=0)
    with pytest.raises(pydantic.ValidationError):
        RunConfig(unknown_option=1)


def test_configs_are_frozen():
    cfg = DatasetConfig()
    with pytest.raises(pydantic.ValidationError):
        cfg.n = 3


def test_config_hash_is_stable_and_sensitive():
    a, b = FitConfig(), FitConfig(extractor="LSE", seed=0)
    assert a.config_hash() == b.config_hash()
    assert len(a.config_hash()) == 64
    assert FitConfig(seed=1).config_hash() != a.config_hash()
    assert FitConfig(schedule=Schedule(samples_per_epoch=8)).config_hash() != a.config_hash()
    assert DatasetConfig(seed=1).config_hash() != DatasetConfig().config_hash()


def test_run_config_derives_datasets_and_fits():
    run = RunConfig(profile="smoke", train_seed=4, eval_seed=9, n_eval=32)
    train, ev = run.dataset("train"), run.dataset("eval")
    smoke = PROFILES["smoke"]
    assert (train.split, train.seed, train.n, train.chunk_size) == (
        "train",
        4,
        smoke.n_train,
        smoke.chunk_size,
    )
    assert (ev.split, ev.seed, ev.n) == ("eval", 9, 32)
    fit = run.fit("NSE-2")
    assert fit.extractor == "NSE-2"
    assert fit.schedule.samples_per_epoch == smoke.samples_per_epoch
    assert fit.seed == run.fit_seed


# -- per-analysis overrides ---------------------------------------------------------------------


def test_analysis_params_default_to_the_profile():
    from tasks.analyses.cosine_similarity.science import CosineSimilarityParams
    from tasks.analyses.layerwise.science import LayerwiseParams
    from tasks.analyses.registry import analysis_params

    run = RunConfig(profile="quick", samples_per_epoch=64)
    assert analysis_params(run, "cosine_similarity") == CosineSimilarityParams.for_run(
        RunConfig(profile="quick")
    )
    # layer-wise follows the run's own LSE schedule (its samples_per_epoch override included)
    assert analysis_params(run, "layerwise") == LayerwiseParams(schedule=run.fit("LSE").schedule)
    assert analysis_params(run, "category_selection").fits == tuple(
        run.fit(e) for e in run.extractors
    )


def test_analysis_params_overrides_change_the_key_and_only_the_named_fields():
    from tasks.analyses.registry import analysis_params

    base = RunConfig(profile="paper")
    run = RunConfig(
        profile="paper",
        analysis_params={"cosine_similarity": {"t1": 5, "t2": 4000}, "fewshot": {"repeats": 2}},
    )
    cos, cos0 = (
        analysis_params(run, "cosine_similarity"),
        analysis_params(base, "cosine_similarity"),
    )
    assert (cos.t1, cos.pool_size) == (5, 4000) and (cos0.t1, cos0.pool_size) == (200, 4000)
    lowered = analysis_params(
        RunConfig(profile="paper", analysis_params={"cosine_similarity": {"t1": 10}}),
        "cosine_similarity",
    )
    assert lowered.pool_size == 200  # T1 alone: T2 follows at 20·T1
    assert cos.seed == cos0.seed and cos.config_hash() != cos0.config_hash()
    few = analysis_params(run, "fewshot")
    assert few.repeats == 2 and few.shots == analysis_params(base, "fewshot").shots
    assert analysis_params(run, "layerwise") == analysis_params(base, "layerwise")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cosine_similarity": {"t_one": 5}}, "valid fields of cosine_similarity: t1, t2"),
        ({"cosine_similarity": {"t1": 30, "t2": 100}}, "must be a multiple of t1"),
        ({"fewshot": {"repeats": 0}}, "invalid analysis_params for fewshot"),
    ],
)
def test_bad_analysis_params_fail_before_any_work(overrides, message):
    from tasks.analyses.registry import resolve_analyses

    with pytest.raises(LinearGanError, match=message):
        resolve_analyses(RunConfig(profile="smoke", analysis_params=overrides))


def test_unknown_analysis_name_rejected():
    from tasks.analyses.registry import ANALYSES, resolve_analyses

    with pytest.raises(LinearGanError, match="unknown analysis 'cosine'.*cosine_similarity"):
        resolve_analyses(RunConfig(analysis_params={"cosine": {"t1": 5}}))
    with pytest.raises(LinearGanError, match="unknown analysis 'nope'"):
        resolve_analyses(RunConfig(analyses=("fewshot", "nope")))
    assert list(resolve_analyses(RunConfig(analyses=()))) == ["table1"]  # every run has Table 1
    # every registered analysis but the optional experiments, in registry order (no second
    # list to keep up to date); an optional one runs when named
    assert list(resolve_analyses(RunConfig())) == [
        n for n, spec in ANALYSES.items() if not spec.optional
    ]
    assert "scs_experiments" not in resolve_analyses(RunConfig())
    assert "scs_experiments" in resolve_analyses(RunConfig(analyses=("scs_experiments",)))


def test_cli_set_parses_json_values_and_rejects_malformed():
    from flows.reproduce import parse_overrides

    got = parse_overrides(["cosine_similarity.t1=5", "fewshot.shots=[1, 4]", "x.y=abc"])
    assert got == {"cosine_similarity": {"t1": 5}, "fewshot": {"shots": [1, 4]}, "x": {"y": "abc"}}
    with pytest.raises(LinearGanError, match="ANALYSIS.FIELD=VALUE"):
        parse_overrides(["cosine_similarity=5"])


def test_nested_overrides_keep_the_runs_other_fields():
    from tasks.analyses.registry import analysis_params

    run = RunConfig(
        profile="quick",
        fit_seed=3,
        analysis_params={
            "layerwise": {"schedule": {"lr": 5e-4}},
            "category_selection": {"fits": [{"extractor": "LSE"}]},
        },
    )
    lw = analysis_params(run, "layerwise")
    assert lw.schedule.lr == 5e-4 and lw.seed == 3
    assert lw.schedule.samples_per_epoch == run.fit("LSE").schedule.samples_per_epoch == 128
    sel = analysis_params(run, "category_selection")
    assert sel.fits == (run.fit("LSE"),)  # round 1 still reuses Table 1's LSE


def test_authors_protocol_switches_layer_weights_of_lse_and_nse1_only():
    paper, authors = RunConfig(profile="smoke"), RunConfig(profile="smoke", protocol="authors")
    assert {paper.fit(e).layer_weights for e in ("LSE", "NSE-1", "NSE-2")} == {"none"}
    assert [authors.fit(e).layer_weights for e in ("LSE", "NSE-1", "NSE-2")] == [
        "softplus",
        "softplus",
        "none",
    ]
    assert authors.fit("LSE").config_hash() != paper.fit("LSE").config_hash()
    with pytest.raises(LinearGanError, match="NSE-2 has no per-layer"):
        FitConfig(extractor="NSE-2", layer_weights="softplus")


def test_checkpoint_paths_are_recorded_absolute(tmp_path, monkeypatch):
    from lineargan.config import DatasetConfig

    monkeypatch.chdir(tmp_path)
    cfg = DatasetConfig(
        generator_checkpoint="g.pth",
        segmenter="face-parser-unet",
        segmenter_checkpoint="s3://bucket/p.pth",
    )
    assert cfg.generator_checkpoint == str(tmp_path / "g.pth")
    assert cfg.segmenter_checkpoint == "s3://bucket/p.pth"  # URLs are left as they are

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
    assert s.lr == 1e-3 and s.lr_drop_epoch == 18  # lr/10 when the batch-64 phase starts
    assert epochs[s.lr_drop_epoch][1] == 64 and epochs[s.lr_drop_epoch - 1][1] == 4


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

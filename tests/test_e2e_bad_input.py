"""Bad input exits non-zero with one clear line naming the problem and the fix."""

from __future__ import annotations

import pytest

from tests.e2e_helpers import isolated_env, run_module


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--profile", "nope"], "unknown profile 'nope'"),
        (["--generator", "stylegan9"], "unknown generator 'stylegan9'"),
        (["--segmenter", "unet"], "unknown segmenter 'unet'"),
        (["--extractors", "NSE-3"], "invalid parameter extractors"),
        (["--n-train", "0"], "invalid parameter n_train"),
        (["--results-root", "/proc/not-writable"], "cannot write to /proc/not-writable"),
        (["--results-root", "memory://results"], "is not a local directory"),
        (["--set", "cosine_similarity.t_one=5"], "valid fields of cosine_similarity"),
        (["--set", "cosine_similarity=5"], "ANALYSIS.FIELD=VALUE"),
        (["--set", "cosine.t1=5"], "unknown analysis 'cosine'"),
    ],
)
@pytest.mark.slow
def test_reproduce_rejects_bad_input(tmp_path, args, needle):
    proc = run_module("flows.reproduce", args, isolated_env(tmp_path), timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0] and "Fix:" in errors[0], proc.stderr[-2000:]


@pytest.mark.slow
def test_wrong_checkpoint_is_refused_before_anything_is_written(tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    env = isolated_env(tmp_path)
    proc = run_module(
        "flows.cache", ["--generator-checkpoint", str(bogus), "-n", "32", "--chunk-size", "16"], env, timeout=300
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "cannot be read as a torch file" in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "data" / "stores").exists()

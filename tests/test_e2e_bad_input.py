"""Bad input exits non-zero with one clear line naming the problem and the fix, before any
work starts."""

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
        (["--results-root", "nosuch://results"], "no filesystem for nosuch://"),
        (["--set", "cosine_similarity.t_one=5"], "valid fields of cosine_similarity"),
        (["--set", "cosine_similarity=5"], "ANALYSIS.FIELD=VALUE"),
        (["--set", "cosine.t1=5"], "unknown analysis 'cosine'"),
    ],
)
def test_reproduce_rejects_bad_input(tmp_path, monkeypatch, capsys, args, needle):
    """In process (the checks run before any flow, server or cluster starts)."""
    from flows.reproduce import main

    for key, value in isolated_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0] and "Fix:" in errors[0], err[-2000:]
    assert not (tmp_path / "data" / "stores").exists()


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        (
            ["table", "tabel1"],
            "no table 'tabel1' under {root} (did you mean 'table1'?). Fix: use "
            "one of: fewshot_summary, table1",
        ),
        (["render", "table1"], "no reproduce run has finished under {root}"),
        (["render", "tabel1"], "unknown paper table 'tabel1'. Fix: use one of: table1, table6"),
        (["table", "table1", "--results-root", "{root}/elsewhere"], "no result tables under"),
    ],
)
def test_a_misspelt_table_lists_the_tables_there(tmp_path, capsys, command, needle):
    """Not "run the reproduce flow first" when the results root has tables, only not that one."""
    import pandas as pd

    from flows.cli import main

    root = tmp_path / "results"
    for table in ("table1", "fewshot_summary"):
        (root / "tables" / table).mkdir(parents=True)
        pd.DataFrame({"a": [1]}).to_parquet(root / "tables" / table / "part.parquet")
    args = [a.replace("{root}", str(root)) for a in command]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--results-root", str(root)] if "--results-root" not in args else args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle.replace("{root}", str(root)) in err, err


@pytest.mark.slow
def test_the_real_entry_point_exits_2_with_one_line(tmp_path):
    proc = run_module("flows.reproduce", ["--profile", "nope"], isolated_env(tmp_path), timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "unknown profile 'nope'" in errors[0], proc.stderr[-2000:]


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

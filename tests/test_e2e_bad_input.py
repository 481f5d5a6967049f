"""Bad input exits non-zero with one clear line naming the problem and the fix, before any
work starts."""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket

import pytest
import torch

from tests.e2e_helpers import isolated_env, run_module

needs_s3fs = pytest.mark.skipif(
    importlib.util.find_spec("s3fs") is None, reason="the s3 extra is not installed"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _CodeRunner:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# No AWS credentials anywhere botocore looks (files, variables, the instance metadata service).
NO_AWS = {
    "AWS_CONFIG_FILE": "{tmp}/no-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "{tmp}/no-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
RECIPE = ["stylegan2-ffhq", "--profile", "smoke", "--segmenter-checkpoint", "s.pt"]
RECIPE += ["--generator-checkpoint"]


@pytest.mark.parametrize(
    ("module", "args", "needle", "env"),
    [
        ("reproduce", ["--profile", "nope"], "unknown profile 'nope'", {}),
        ("reproduce", ["--generator", "stylegan9"], "unknown generator 'stylegan9'", {}),
        ("reproduce", ["--segmenter", "unet"], "unknown segmenter 'unet'", {}),
        ("reproduce", ["--extractors", "NSE-3"], "invalid parameter extractors", {}),
        ("reproduce", ["--n-train", "0"], "invalid parameter n_train", {}),
        ("reproduce", ["--results-root", "/proc/not-writable"], "cannot write to /proc/", {}),
        ("reproduce", ["--results-root", "nosuch://results"], "no filesystem for nosuch://", {}),
        ("reproduce", ["--set", "cosine_similarity.t_one=5"], "valid fields of cosine_sim", {}),
        ("reproduce", ["--set", "cosine_similarity=5"], "ANALYSIS.FIELD=VALUE", {}),
        ("reproduce", ["--set", "cosine.t1=5"], "unknown analysis 'cosine'", {}),
        # malformed JSON and flags: one line naming the flag, not a pydantic-settings traceback
        ("reproduce", ["--generator-options", "{bad"], "--generator-options is not valid JSON", {}),
        ("reproduce", ["--segmenter-options", "{bad"], "--segmenter-options is not valid JSON", {}),
        ("reproduce", ["--store-policy", "{bad"], "--store-policy is not valid JSON", {}),
        ("reproduce", ["--analysis-params", "{bad"], "--analysis-params is not valid JSON", {}),
        ("reproduce", ["--extractors", '["LSE"'], """--extractors '["a", "b"]'""", {}),
        ("reproduce", ["--nosuch", "1"], "unrecognized arguments: --nosuch 1", {}),
        ("reproduce", ["--profile"], "--profile: expected one argument", {}),
        ("cache", ["--store-policy", "{bad"], "--store-policy is not valid JSON", {}),
        ("cache", ["--nosuch"], "unrecognized arguments: --nosuch", {}),
        ("recipes", [*RECIPE, "g.pt", "--overrides", "{bad"], "--overrides is not valid JSON", {}),
        # roots, object stores, schedulers: checked up front, within seconds
        ("reproduce", ["--data-root", "{tmp}/a-file"], "cannot write to {tmp}/a-file", {}),
        ("reproduce", [], "cannot write to {tmp}/a-file", {"LINEARGAN_DATA": "{tmp}/a-file"}),
        ("cache", ["--data-root", "{tmp}/a-file"], "cannot write to {tmp}/a-file", {}),
        (
            "recipes",
            [*RECIPE, "g.pt", "--overrides", '{"data_root": "{tmp}/a-file"}'],
            "cannot write to {tmp}/a-file",
            {},
        ),
        pytest.param(
            "reproduce",
            ["--data-root", "s3://lineargan-test/data"],
            "export AWS_ACCESS_KEY_ID",
            NO_AWS,
            marks=needs_s3fs,
        ),
        pytest.param(
            "cache",
            ["--data-root", "s3://lineargan-test/data"],
            "Unable to locate credentials",
            NO_AWS,
            marks=needs_s3fs,
        ),
        pytest.param(
            "reproduce",
            ["--results-root", "s3://lineargan-test/results"],
            "check that the object store is reachable",
            {
                **NO_AWS,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_ENDPOINT_URL": "http://127.0.0.1:{port}",
            },
            marks=needs_s3fs,
        ),
        (
            "reproduce",
            ["--dask-address", "tcp://127.0.0.1:{port}"],
            "no Dask scheduler answers",
            {},
        ),
        ("cache", ["--dask-address", "tcp://127.0.0.1:{port}"], "no Dask scheduler answers", {}),
        ("reproduce", ["--dask-address", "nowhere"], "cannot read the Dask address", {}),
        # models and stores: checked before the flow, not after Prefect and Dask started
        (
            "reproduce",
            ["--store-policy", '{"layers": ["block9"]}'],
            "store policy names layers ['block9']",
            {},
        ),
        ("cache", ["--store-policy", '{"layers": ["block9"]}'], "names layers ['block9']", {}),
        (
            "reproduce",
            ["--generator-checkpoint", "{tmp}/code.pt"],
            "not weights (posix.system)",
            {},
        ),
        ("recipes", [*RECIPE, "{tmp}/code.pt"], "pickles objects that are not weights", {}),
        ("recipes", [*RECIPE, "{tmp}/plain.pkl"], "is a plain pickle, neither", {}),
    ],
)
def test_bad_input_is_one_line_before_any_flow(
    tmp_path, monkeypatch, capsys, module, args, needle, env
):
    """In process, with the flows replaced by a failure: every check runs before any flow,
    Prefect server or Dask cluster starts."""
    flows = importlib.import_module(f"flows.{module}")
    for name in ("reproduce", "cache", "recipe"):
        if hasattr(flows, name):
            monkeypatch.setattr(flows, name, _flow_started)
    (tmp_path / "a-file").write_text("not a directory")
    torch.save({"g": _CodeRunner(str(tmp_path / "code-ran"))}, tmp_path / "code.pt")
    (tmp_path / "plain.pkl").write_bytes(b"\x80\x04K\x01.")  # pickle.dumps(1)

    def fill(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path)).replace("{port}", str(_free_port()))

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in {**isolated_env(tmp_path), **env}.items():
        monkeypatch.setenv(key, fill(value))
    with pytest.raises(SystemExit) as exit_info:
        flows.main([fill(a) for a in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fill(needle) in errors[0] and "Fix:" in errors[0], err[-2000:]
    assert not (tmp_path / "data" / "stores").exists()
    assert not (tmp_path / "code-ran").exists()


def _flow_started(*args, **kwargs):
    raise AssertionError("the flow started before the input was checked")


def test_a_store_of_another_chunk_size_is_refused_before_any_flow(tmp_path, monkeypatch, capsys):
    """The store at the run's path was made with chunks of 16; the run asks for 32."""
    import flows.reproduce
    from lineargan.config import RunConfig
    from tasks.cache import prepare_store

    data = tmp_path / "data"
    for key, value in isolated_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    args = ["--profile", "smoke", "--n-train", "32"]
    train = RunConfig(profile="smoke", n_train=32).dataset("train")
    prepare_store(train.model_copy(update={"chunk_size": 16}), str(data))
    monkeypatch.setattr(flows.reproduce, "reproduce", _flow_started)
    with pytest.raises(SystemExit) as exit_info:
        flows.reproduce.main(args)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "chunk_size: store has 16, asked for 32" in errors[0], errors


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
        "flows.cache",
        ["--generator-checkpoint", str(bogus), "-n", "32", "--chunk-size", "16"],
        env,
        timeout=300,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "cannot be read as a torch file" in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "data" / "stores").exists()

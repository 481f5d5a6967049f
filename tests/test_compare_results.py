"""`lineargan compare`: two runs' tables are "same" exactly when every measured number is."""

from __future__ import annotations

import pandas as pd
import pytest

from flows.cli import main
from storage.results import compare_results
from storage.tables import write_table_part


def run(root, miou: float, seconds: float, latent: list[float], run_id: str) -> str:
    """A results root as a run writes it: two units of one table in separate parts (in an
    order of its own), plus bookkeeping that differs between any two runs."""
    rows = pd.DataFrame(
        {
            "extractor": ["LSE", "NSE-1"],
            "miou": [miou, 0.5],
            "latent": [latent, [0.0, 1.0]],
            "train_seconds": [seconds, seconds],
            "run_id": [run_id, run_id],
        }
    )
    write_table_part(str(root), "table1", "b", rows.iloc[[1]])
    write_table_part(str(root), "table1", "a", rows.iloc[[0]])
    write_table_part(str(root), "results_index", run_id, pd.DataFrame({"run_id": [run_id]}))
    return str(root)


def test_runs_that_measured_the_same_numbers_compare_same(tmp_path):
    a = run(tmp_path / "a", 0.25, 10.0, [0.1, 0.2], "run-1")
    b = run(tmp_path / "b", 0.25, 99.0, [0.1, 0.2], "run-2")  # other times and run id
    assert compare_results(a, b) == {"table1": "same"}


@pytest.mark.parametrize(("miou", "latent"), [(0.25 + 1e-12, [0.1, 0.2]), (0.25, [0.1, 0.2000001])])
def test_any_measured_difference_is_reported(tmp_path, capsys, miou, latent):
    a = run(tmp_path / "a", 0.25, 10.0, [0.1, 0.2], "run-1")
    b = run(tmp_path / "b", miou, 10.0, latent, "run-1")
    assert compare_results(a, b)["table1"] != "same"
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", a, b])
    assert exit_info.value.code == 1
    assert "0 of 1 tables identical" in capsys.readouterr().out


def test_a_table_the_other_run_lacks_is_missing(tmp_path):
    a = run(tmp_path / "a", 0.25, 10.0, [0.1, 0.2], "run-1")
    write_table_part(a, "fewshot", "k", pd.DataFrame({"miou": [0.1]}))
    b = run(tmp_path / "b", 0.25, 10.0, [0.1, 0.2], "run-1")
    assert compare_results(a, b) == {"fewshot": "missing", "table1": "same"}


def test_an_analysis_key_is_bookkeeping(tmp_path):
    """A parameter field added with the old behaviour changes the analysis key (a hash of the
    parameters) and no number: the runs still compare same."""
    a = run(tmp_path / "a", 0.25, 10.0, [0.1, 0.2], "run-1")
    b = run(tmp_path / "b", 0.25, 10.0, [0.1, 0.2], "run-1")
    write_table_part(a, "sie_summary", "k1", pd.DataFrame({"score": [0.5], "key": ["k1"]}))
    write_table_part(b, "sie_summary", "k2", pd.DataFrame({"score": [0.5], "key": ["k2"]}))
    assert compare_results(a, b) == {"sie_summary": "same", "table1": "same"}

"""The user's path: Prefect server on 127.0.0.1 + process work pool + worker + `prefect deploy`
+ the deployment run followed live by flows.follow, all through scripts/run.sh. The run takes
one analysis beside Table 1 (the script's config change): every analysis of the smoke profile
runs end to end in the ephemeral tests, so this one pays for the deployment path only."""

from __future__ import annotations

import subprocess

import pandas as pd
import psutil
import pytest

from tests.e2e_helpers import ROOT, isolated_env


@pytest.mark.slow
def test_run_script_smoke_through_deployment(tmp_path):
    env = isolated_env(tmp_path)
    before = {p.pid for p in psutil.process_iter()}
    proc = subprocess.run(
        ["bash", "scripts/run.sh", "smoke", '{"analyses": ["fewshot"]}'],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "Flow run finished successfully in 'Completed'" in proc.stdout
    assert "Table 1" in proc.stdout and "NSE-2" in proc.stdout and "Table 2" in proc.stdout
    # live progress reached the terminal: cache chunks, fit iterations, analyses
    assert "cache chunks:" in proc.stdout and "LSE: iteration" in proc.stdout
    assert "analyses:" in proc.stdout
    # the config change reached the run: Table 2 and no other analysis
    assert "analyses: table1, fewshot)" in proc.stdout, proc.stdout[:3000]
    assert not (tmp_path / "results" / "tables" / "scs_summary").exists()
    assert len(pd.read_parquet(tmp_path / "results" / "tables" / "fewshot_summary"))
    t1 = pd.read_parquet(tmp_path / "results" / "tables" / "table1")
    assert sorted(zip(t1.method, t1.extractor, strict=True)) == [
        (m, e) for m in ("converged", "schedule") for e in ("LSE", "NSE-1", "NSE-2")
    ]
    # the script stops the server and worker it started (found by their PREFECT_HOME)
    assert not [
        p
        for p in psutil.process_iter()
        if p.pid not in before and _prefect_home(p) == env["PREFECT_HOME"]
    ]


def _prefect_home(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get("PREFECT_HOME")
    except (psutil.Error, OSError):
        return None

"""Ctrl-C on ephemeral runs (no server configured: Prefect starts a temporary one, the run a
Dask LocalCluster with worker processes), sent as a terminal sends it: SIGINT to the whole
foreground process group.

The first Ctrl-C stops the run in seconds with exit 130 and one line saying what finished and
how to resume, leaving no process behind; a rerun completes it with the tables of a run that
was never interrupted. A second Ctrl-C ends everything at once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from flows.interrupt import GRACE_S
from tests.e2e_helpers import (
    ROOT,
    as_terminal_job,
    isolated_env,
    kill_command,
    process_tree,
    run_module,
    table_rows,
)

STARTUP_DEADLINE_S = 600  # a safety net for a run that never gets there, not a timer
SMOKE = ["--profile", "smoke"]
# Table 1 only: its six fits are what gets interrupted and resumed; the other analyses add
# minutes to the rerun and nothing to what this checks (the shared smoke run covers them)
TABLE1 = [*SMOKE, "--analyses", "[]"]


def start(module_args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *module_args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's foreground process group
            preexec_fn=as_terminal_job,
        )


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_command(proc)
            pytest.fail(f"never {what} (rc={proc.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def press_ctrl_c(proc: subprocess.Popen, log: Path, times: int = 1) -> tuple[int, float, str]:
    """Ctrl-C ``times`` times (half a second apart, as a person presses) and wait for the
    command: its exit code, the seconds from the last press to its exit, and its output."""
    for press in range(times):
        if press:
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's whole foreground process group
        pressed = time.monotonic()
    try:
        rc = proc.wait(timeout=120)
    finally:
        kill_command(proc)
    return rc, time.monotonic() - pressed, log.read_text()


def assert_stopped(rc: int, output: str, processes: list[psutil.Process]) -> str:
    """Exit 130, one line saying what finished (returned), no traceback, no process left."""
    assert rc == 130, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, output[-3000:]
    assert "Traceback" not in output and "Error logging to API" not in output, output[-3000:]
    _, alive = psutil.wait_procs(processes, timeout=5)  # (a zombie waits for init to reap it)
    assert not alive, alive
    return lines[0]


@pytest.mark.slow
def test_ctrl_c_stops_a_run_in_seconds_and_a_rerun_completes_it(tmp_path, smoke_run):
    env = isolated_env(tmp_path / "run")
    results = tmp_path / "run" / "results"
    log = tmp_path / "interrupted.log"
    proc = start(["flows.reproduce", *TABLE1], env, log)
    # genuinely mid-run: the stores are built, a Table 1 fit has finished, others are running
    wait_until(lambda: "fits: 1/6" in log.read_text(), proc, log, "finished a fit")
    processes = process_tree(proc.pid)  # this command, the flow, its server and Dask workers
    assert len(processes) >= 4, processes
    rc, stopped_s, output = press_ctrl_c(proc, log)
    line = assert_stopped(rc, output, processes)
    # the run stopped on its own (the supervisor would force it after GRACE_S)
    assert stopped_s < GRACE_S, f"took {stopped_s:.1f} s"
    assert re.fullmatch(
        r"interrupted: this run finished cache chunks 5/5, fits [1-5]/6; "
        r"rerun the same command to resume \(finished work is reused\)",
        line,
    )

    rerun = run_module("flows.reproduce", TABLE1, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    out = rerun.stdout + rerun.stderr
    assert "computed 0 chunks, 5 already done" in out
    assert re.search(r"\b(LSE|NSE-1|NSE-2)(:converged)? reused\b", out), out[-3000:]

    whole, _, uninterrupted = smoke_run  # the same Table 1, never interrupted
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    resumed = table_rows(results)
    assert set(resumed) == {"table1", "iou_per_class", "iou_per_class_detected"}, set(resumed)
    assert resumed == {
        name: rows for name, rows in table_rows(whole / "results").items() if name in resumed
    }


@pytest.mark.slow
def test_a_second_ctrl_c_ends_the_run_at_once(tmp_path):
    log = tmp_path / "run.log"
    args = ["flows.cache", "-n", "64", "--chunk-size", "16", "--n-workers", "1"]
    proc = start(args, isolated_env(tmp_path), log)
    # mid-run: the temporary server and the Dask cluster are up, chunks are being computed
    started = "Connecting to an existing Dask cluster"
    wait_until(lambda: started in log.read_text(), proc, log, "started the cache stage")
    processes = process_tree(proc.pid)
    rc, stopped_s, output = press_ctrl_c(proc, log, times=2)
    assert_stopped(rc, output, processes)
    assert stopped_s < 1.5, f"took {stopped_s:.1f} s"

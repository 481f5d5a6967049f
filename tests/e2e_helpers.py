"""Helpers for tests that run flows and scripts as real subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]


def isolated_env(tmp: Path) -> dict[str, str]:
    """Environment with its own Prefect home and data/results roots under ``tmp`` (and no
    other Prefect setting: the flows' own defaults, ``flows/__init__.py``, are under test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    (tmp / "prefect").mkdir(parents=True, exist_ok=True)
    env.update(
        PREFECT_HOME=str(tmp / "prefect"),
        LINEARGAN_DATA=str(tmp / "data"),
        LINEARGAN_RESULTS=str(tmp / "results"),
    )
    return env


def run_module(
    module: str, args: list[str], env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_module(module: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``python -m module *args`` in the background, its output to ``log``, in a process group
    of its own (as a terminal starts a command), so :func:`kill_command` ends it and all it
    started."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def process_tree(pid: int) -> list[psutil.Process]:
    """``pid`` and every process it started, at any depth (also in sessions of their own)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_command(proc: subprocess.Popen) -> None:
    """SIGKILL a command started in a process group of its own, and every process group its
    processes run in: a supervised entry point runs its flow in a session of its own
    (flows.interrupt), with the flow's server and Dask workers in that session's group."""
    groups = []
    for p in reversed(process_tree(proc.pid)):  # the deepest groups first
        with contextlib.suppress(ProcessLookupError):
            groups.append(os.getpgid(p.pid))
    for group in dict.fromkeys([*groups, proc.pid]):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    proc.wait(timeout=30)


VOLATILE_COLUMNS = {"run_id", "created_at", "code_version", "train_seconds", "fit_reused"}


def table_rows(results_root: Path) -> dict[str, list[str]]:
    """Every result table of a run as sorted rows, for comparing two runs of the same work:
    without what differs between runs of it (ids, clocks, whether a fit was reused), and with
    paths relative to the run's results root."""
    out = {}
    for table in sorted((results_root / "tables").iterdir()):
        if table.name == "results_index":  # lists files by run id
            continue
        frame = pd.read_parquet(table).drop(columns=list(VOLATILE_COLUMNS), errors="ignore")
        rows = (
            repr({k: _comparable(v, results_root) for k, v in row.items()})
            for row in frame.to_dict("records")
        )
        out[table.name] = sorted(rows)
    return out


def _comparable(value: Any, results_root: Path) -> Any:
    if isinstance(value, str):
        return value.replace(str(results_root), "<results>")
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def as_terminal_job() -> None:
    """A command typed at a terminal starts with SIGINT at its default; one started under a
    test run that was itself started in the background (``cmd &``, ``nohup``: SIGINT ignored,
    and inherited) would rightly keep ignoring Ctrl-C (``flows.interrupt``), so the command
    under test starts as a terminal starts it, however pytest was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

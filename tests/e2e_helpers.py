"""Helpers for tests that run flows and scripts as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def isolated_env(tmp: Path) -> dict[str, str]:
    """Environment with its own Prefect home and data/results roots under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    (tmp / "prefect").mkdir(parents=True, exist_ok=True)
    env.update(
        PREFECT_HOME=str(tmp / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        LINEARGAN_DATA=str(tmp / "data"),
        LINEARGAN_RESULTS=str(tmp / "results"),
    )
    return env


def run_module(module: str, args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )

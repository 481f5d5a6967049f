"""Default on-disk locations.

Everything large (downloaded weights, Zarr stores, fits, results) lives under git-ignored
folders of the project checkout unless the user points elsewhere, so a clone stays small and
nothing lands in the home directory.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Where downloaded model weights are cached (``LINEARGAN_CACHE`` overrides)."""
    return Path(os.environ.get("LINEARGAN_CACHE", PROJECT_ROOT / ".cache"))


def default_data_root() -> str:
    """Default root of the Zarr feature/label stores."""
    return os.environ.get("LINEARGAN_DATA", str(PROJECT_ROOT / "data"))


def default_results_root() -> str:
    """Default root of fits, Parquet tables and figures."""
    return os.environ.get("LINEARGAN_RESULTS", str(PROJECT_ROOT / "results"))

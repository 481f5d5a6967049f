"""The import contracts of pyproject.toml catch what they promise to catch.

Each probe adds one offending module to a copy of the tree and runs import-linter on it with
the project's own configuration: the contract must break, naming the probe. A contract that
an allow-list or a typo had made toothless would let the probe pass.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e_helpers import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("flows", "tasks", "storage", "lineargan")
ANALYSIS = "an analysis's science and renderers"


def lint_copy(
    tmp_path: Path, probe: str | None = None, source: str = ""
) -> subprocess.CompletedProcess:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if probe:
        folder = (tmp_path / probe).parent
        if not folder.exists():  # a new analysis folder
            folder.mkdir()
            (folder / "__init__.py").write_text("")
        (tmp_path / probe).write_text(source)
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_tree_as_it_is_keeps_every_contract(tmp_path):
    proc = lint_copy(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.mark.parametrize(
    ("probe", "source", "contract"),
    [
        ("tasks/probe_step.py", "import prefect\n", "Prefect lives in flows/"),
        ("storage/probe_io.py", "from prefect import task\n", "Prefect lives in flows/"),
        ("lineargan/probe_science.py", "import prefect_dask\n", "Prefect lives in flows/"),
        ("lineargan/probe_zarr.py", "import zarr\n", "the science (lineargan) never touches"),
        ("lineargan/probe_fs.py", "import fsspec\n", "the science (lineargan) never touches"),
        (
            "lineargan/probe_parquet.py",
            "import pyarrow.parquet\n",
            "the science (lineargan) never touches",
        ),
        ("lineargan/probe_s3.py", "import s3fs\n", "the science (lineargan) never touches"),
        ("lineargan/probe_dask.py", "import dask\n", "the science (lineargan) never touches"),
        # every analysis folder, present or future (a wildcard, not a list of analyses)
        ("tasks/analyses/probe/science.py", "from storage.tables import schema\n", ANALYSIS),
        ("tasks/analyses/probe/science.py", "import pyarrow as pa\n", ANALYSIS),
        # a step is no science: it writes through storage
        ("tasks/analyses/fewshot/probe.py", "from storage.tables import schema\n", None),
        ("tasks/analyses/probe/render.py", "import zarr\n", ANALYSIS),
        ("tasks/analyses/probe/science.py", "from prefect import task\n", ANALYSIS),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path, probe, source, contract):
    proc = lint_copy(tmp_path, probe, source)
    if contract is None:
        assert proc.returncode == 0, proc.stdout[-3000:]
        return
    assert proc.returncode != 0, proc.stdout[-3000:]
    broken = proc.stdout[proc.stdout.index("Broken contracts") :]
    module = probe.removesuffix(".py").replace("/", ".")
    assert contract in broken and module in broken, proc.stdout[-3000:]

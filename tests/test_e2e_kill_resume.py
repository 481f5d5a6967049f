"""Kill the cache flow midway (all its processes at once, like kill -9), rerun it, and
check that finished chunks are not recomputed and that the resumed store holds exactly the
bytes of a clean, uninterrupted build of the same dataset.

The kill is driven by the flow's own progress, never by a timer: the test watches the store's
``chunk_done`` files appear on disk (one file per chunk, written last by each chunk's commit)
and kills as soon as ``KILL_AFTER`` of them exist, so it lands between chunks on a fast machine
and on a slow one alike (a chunk takes far longer than one poll).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from storage.feature_store import FeatureStore
from storage.layout import store_target
from storage.target import Target
from tests.e2e_helpers import ROOT, isolated_env, kill_command, run_module, start_module

N, CHUNK = 256, 16
N_CHUNKS = N // CHUNK  # 16
KILL_AFTER = 2  # chunks committed before the kill
# CPU and one torch thread in every process (flow workers and the reference build), so the
# two builds compute with the same kernels and can be compared byte for byte.
ARGS = ["-n", str(N), "--chunk-size", str(CHUNK), "--n-workers", "1", "--device", "cpu"]
STARTUP_DEADLINE_S = 300  # a safety net for a flow that never starts, not a kill timer


def committed_chunks(store_path: Path) -> int:
    """Chunks whose ``chunk_done`` element exists on disk (each element is its own Zarr chunk
    file, written as the last step of a chunk's commit, so this never counts a partial chunk)."""
    done_dir = store_path / "chunk_done" / "c"
    try:
        return sum(1 for name in os.listdir(done_dir) if name.isdigit())
    except FileNotFoundError:  # the store is not created yet
        return 0


def read_arrays(url: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(url, mode="r")
    out = {name: g[name][:] for name in ("latents", "images", "labels", "detected", "chunk_done")}
    for name in g["features"].array_keys():
        out[f"features/{name}"] = g["features"][name][:]
    return out


def build_reference(tmp_path: Path, env: dict[str, str]) -> str:
    """A clean single-process build of the same dataset (the cache stage without the flow)."""
    code = (
        "from lineargan.config import DatasetConfig; from tasks.cache import build_store; "
        f"print(build_store(DatasetConfig(n={N}, chunk_size={CHUNK}), {str(tmp_path / 'ref')!r},"
        " device='cpu'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_cache_flow_resumes_after_kill_to_the_clean_build(tmp_path):
    env = {**isolated_env(tmp_path), "LINEARGAN_TORCH_THREADS": "1"}
    target = store_target(str(tmp_path / "data"), "dcgan-digiface", "dlib-face68", "train", 0, N)
    store_path = Path(target.path)
    log = tmp_path / "killed-run.log"
    proc = start_module("flows.cache", ARGS, env, log)  # kill_command ends it and its flow
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while committed_chunks(store_path) < KILL_AFTER:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text()[-3000:]
                pytest.fail(f"the flow made no progress (rc={proc.poll()}):\n{tail}")
            time.sleep(0.01)
    finally:
        kill_command(proc)

    killed = FeatureStore.open(Target(target.url))
    finished_before = int(killed.done_mask().sum())
    assert KILL_AFTER <= finished_before < N_CHUNKS, f"kill landed at {finished_before} chunks"
    assert not killed.complete

    rerun = run_module("flows.cache", ARGS, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    m = re.search(r"computed (\d+) chunks, (\d+) already done", rerun.stdout + rerun.stderr)
    assert m, rerun.stdout[-2000:]
    computed, skipped = int(m.group(1)), int(m.group(2))
    assert skipped == finished_before and computed == N_CHUNKS - finished_before

    resumed = FeatureStore.open(Target(target.url), require_complete=True)
    assert resumed.verify() == []

    reference_url = build_reference(tmp_path, env)
    reference = FeatureStore.open(Target(reference_url), require_complete=True)
    assert resumed.spec == reference.spec
    ours, theirs = read_arrays(target.url), read_arrays(reference_url)
    assert ours.keys() == theirs.keys()
    assert {"latents", "images", "labels", "detected"} < ours.keys()
    assert len([k for k in ours if k.startswith("features/")]) == len(reference.spec.layer_names)
    for name in ours:
        a, b = ours[name], theirs[name]
        assert (a.dtype, a.shape) == (b.dtype, b.shape), name
        assert a.tobytes() == b.tobytes(), f"{name} differs from the clean build"

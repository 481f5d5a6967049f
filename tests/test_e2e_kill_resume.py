"""Kill the cache flow midway (the whole process group, like Ctrl-C + kill -9), rerun it, and
check that finished chunks are not recomputed and the store ends complete and readable."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

from storage.feature_store import FeatureStore
from storage.layout import store_target
from tests.e2e_helpers import ROOT, isolated_env, run_module

ARGS = ["--n", "384", "--chunk-size", "16", "--n-workers", "1"]  # 24 chunks


def test_cache_flow_resumes_after_kill(tmp_path):
    env = isolated_env(tmp_path)
    target = store_target(str(tmp_path / "data"), "dcgan-digiface", "dlib-face68", "train", 0, 384)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cache", *ARGS], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    done_at_kill = 0
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if (ROOT / target.path).exists() or os.path.exists(target.path):
                try:
                    done_at_kill = int(FeatureStore.open(target).done_mask().sum())
                except Exception:  # noqa: BLE001 - store still being created
                    done_at_kill = 0
                if done_at_kill >= 4:
                    break
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert 4 <= done_at_kill < 24, f"kill landed at {done_at_kill} chunks"
    done_mask = FeatureStore.open(target).done_mask()
    finished_before = int(done_mask.sum())
    assert not FeatureStore.open(target).complete

    rerun = run_module("flows.cache", ARGS, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    m = re.search(r"computed (\d+) chunks, (\d+) already done", rerun.stdout + rerun.stderr)
    assert m, rerun.stdout[-2000:]
    computed, skipped = int(m.group(1)), int(m.group(2))
    assert skipped == finished_before and computed == 24 - finished_before

    store = FeatureStore.open(target, require_complete=True)
    assert store.done_mask().all()
    assert not store.verify()
    labels = store.group["labels"][:]
    feats = store.group["features"]["block3_32x32"][:]
    assert (labels.reshape(len(labels), -1).max(1) > 0).all()  # every image got labelled
    assert np.isfinite(feats.astype(np.float32)).all() and (np.abs(feats).reshape(len(feats), -1).max(1) > 0).all()

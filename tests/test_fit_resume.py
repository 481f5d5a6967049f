"""A fit survives a kill: partial state saved during the fit, resumed to identical weights."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lineargan.config import Schedule, SolverParams
from lineargan.convex import LBFGSSolve
from lineargan.driver import drive
from lineargan.extractors import build_extractor
from lineargan.plateau import PlateauAdam
from lineargan.training import ScheduledAdam
from storage.checkpoints import PartialFit
from storage.feature_store import FeatureStore
from storage.stream import ChunkStream
from tasks.fit import full_batch, holdout_split
from tests.conftest import build_synthetic_store, synthetic_spec
from tests.e2e_helpers import ROOT, isolated_env

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> FeatureStore:
    url = str(tmp_path_factory.mktemp("resume") / "s.zarr")
    return build_synthetic_store(url, synthetic_spec(n=60, chunk_size=8))  # last chunk: 4


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("skipped", [0, 5, 31, 32, 33, 60, 61, 150])
def test_a_skipped_stream_continues_with_the_same_batches(synthetic, skipped, in_memory):
    """Block boundaries (32 samples with 4 chunks per block), the short last chunk and
    epoch ends included: skipping k samples = drawing them."""
    budget = None if in_memory else 0
    with ChunkStream(synthetic, seed=3, memory_budget_bytes=budget) as a:
        for _ in range(skipped):
            a.next_batch(1)
        want = [a.next_batch(b) for b in (3, 7, 40)]
    with ChunkStream(synthetic, seed=3, memory_budget_bytes=budget) as b:
        b.skip(skipped)
        got = [b.next_batch(n) for n in (3, 7, 40)]
    for (fw, lw), (fg, lg) in zip(want, got, strict=True):
        np.testing.assert_array_equal(lw, lg)
        for x, y in zip(fw, fg, strict=True):
            np.testing.assert_array_equal(x, y)


def test_skip_after_drawing_is_refused(synthetic):
    with ChunkStream(synthetic, seed=0) as s:
        s.next_batch(1)
        with pytest.raises(RuntimeError, match="before the first batch"):
            s.skip(3)


class MemoryCheckpoint:
    """Keeps every saved state; ``load`` returns the one chosen as 'the last before the kill'."""

    def __init__(self, resume_at: int | None = None, states: list[dict] | None = None) -> None:
        self.states = states if states is not None else []
        self.resume_at = resume_at

    def load(self) -> dict | None:
        for s in self.states:
            if s["iteration"] == self.resume_at:
                return s
        return None

    def save(self, state: dict) -> None:
        self.states.append(copy.deepcopy(state))  # the live tensors keep changing


# 3 epochs at batch 4 (lr drops at epoch 1, two iterations in), 2 at batch 8: 12 + 4 steps
SCHEDULE = Schedule(phases=((3, 4), (2, 8)), samples_per_epoch=16, lr=1e-2, lr_drop_epoch=1)


def _model(store: FeatureStore, kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = store.spec
    return build_extractor(kind, len(spec.class_names), [s[0] for s in spec.layer_shapes])


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def _fit(store, kind: str, checkpoint=None):
    spec = store.spec
    model = _model(store, kind)
    with ChunkStream(store, seed=1) as source:
        method = ScheduledAdam(model, source, SCHEDULE, spec.resolution, CPU)
        result = drive(method, checkpoint=checkpoint, save_every_s=0)
    return model, result


@pytest.mark.parametrize("kind", ["LSE", "NSE-2"])
@pytest.mark.parametrize("resume_at", [3, 4, 5, 13])
def test_resumed_fit_ends_with_the_uninterrupted_weights(synthetic, kind, resume_at):
    """Resume points inside an epoch, at the lr-drop epoch's start (4), just after it (5) and
    in the second phase: the weights equal those of a fit that was never interrupted."""
    recorder = MemoryCheckpoint()
    whole, result = _fit(synthetic, kind, recorder)
    assert result.resumed_from == 0 and len(recorder.states) == result.iterations == 16
    resumed, again = _fit(synthetic, kind, MemoryCheckpoint(resume_at, recorder.states))
    assert again.resumed_from == resume_at and again.iterations == 16
    _assert_same_weights(whole, resumed)
    assert again.final_loss == result.final_loss


def test_partial_state_round_trip_and_corrupt_file_ignored(tmp_path, caplog):
    partial = PartialFit(tmp_path / "fit")
    assert partial.load() is None
    state = {
        "iteration": 7,
        "drawn": 28,
        "running": 0.5,
        "history": [(5, 0.6)],
        "model": {"w": torch.ones(2)},
        "optimizer": {"state": {}, "param_groups": []},
        "rng": torch.get_rng_state(),
    }
    partial.save(state)
    back = partial.load()
    assert back["iteration"] == 7 and torch.equal(back["model"]["w"], torch.ones(2))
    partial.path.write_bytes(b"not a torch file")
    assert partial.load() is None and "ignoring unreadable partial fit" in caplog.text
    partial.clear()
    assert not partial.directory.exists()


FIT_SCRIPT = """
import sys
from lineargan.config import FitConfig, Schedule
from tasks.fit import fit_extractor
sched = Schedule(phases=((40, 4),), samples_per_epoch=16, lr_drop_epoch=20)
meta = fit_extractor(sys.argv[1], FitConfig(extractor="NSE-1", schedule=sched), sys.argv[2], "cpu")
print("resumed_from", meta["resumed_from"], "fit_dir", meta["fit_dir"])
"""


def _run_fit(train_url: str, results: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", FIT_SCRIPT, train_url, str(results)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_fit_killed_with_sigkill_resumes_to_identical_weights(train_store_url, tmp_path):
    """A real fit process, killed (SIGKILL) once it has saved partial state, then rerun: it
    resumes from the save (not from iteration 0) and ends with the weights of a fit that ran
    through, with the same seed."""
    env = {
        **isolated_env(tmp_path),
        "LINEARGAN_FIT_SAVE_SECONDS": "0",
        "LINEARGAN_TORCH_THREADS": "1",
    }
    whole = _run_fit(train_store_url, tmp_path / "whole", env)
    out, _ = whole.communicate(timeout=600)
    assert whole.returncode == 0, out
    ref_dir = Path(out.split("fit_dir")[-1].strip())

    killed_root = tmp_path / "killed"
    proc = _run_fit(train_store_url, killed_root, env)
    deadline = time.monotonic() + 300
    state = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(killed_root.glob("fits/*/partial/state.pt"))
        if found and torch.load(found[0], weights_only=True)["iteration"] >= 20:
            state = found[0]
            break
        time.sleep(0.05)
    assert state is not None, "the fit never saved partial state (or finished first)"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    fit_dir = state.parent.parent
    assert not (fit_dir / "config.json").exists(), "the fit finished before the kill"

    rerun = _run_fit(train_store_url, killed_root, env)
    out2, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out2
    resumed_from = int(out2.split("resumed_from")[1].split()[0])
    assert 20 <= resumed_from < 160
    assert not (fit_dir / "partial").exists()  # cleared once the final checkpoint is written
    # the weight snapshots (Fig 8): those taken before the kill survive it, the later ones are
    # taken again, and all of them equal the uninterrupted fit's
    snapshots = sorted(p.name for p in (ref_dir / "snapshots").iterdir())
    assert snapshots == [f"iteration-{2**k:08d}.safetensors" for k in range(8)]  # 160 steps
    assert snapshots == sorted(p.name for p in (fit_dir / "snapshots").iterdir())
    for name in ["weights.safetensors", *(f"snapshots/{n}" for n in snapshots)]:
        a = load_file(ref_dir / name)
        b = load_file(fit_dir / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def _solve(store, checkpoint):
    """A converged LSE on the synthetic store, saving after every L-BFGS iteration."""
    spec = store.spec
    model = _model(store, "LSE")
    params = SolverParams(grad_tol=1e-6, change_tol=1e-9, max_iterations=12)
    method = LBFGSSolve(model, full_batch(store), spec.resolution, CPU, params)
    cert = drive(method, checkpoint=checkpoint, save_every_s=0)
    return model, cert


@pytest.mark.parametrize("resume_at", [1, 6, 11])
def test_resumed_lbfgs_solve_ends_with_the_uninterrupted_weights(synthetic, resume_at):
    """L-BFGS's curvature pairs travel with the iterate: the resumed solve takes the same
    steps (same iterations, evaluations, loss) and ends on the same weights."""
    recorder = MemoryCheckpoint()
    whole, cert = _solve(synthetic, recorder)
    assert cert.resumed_from == 0 and cert.iterations == 12 == len(recorder.states)
    resumed, again = _solve(synthetic, MemoryCheckpoint(resume_at, recorder.states))
    assert again.resumed_from == resume_at
    assert (again.iterations, again.final_loss, again.loss_history) == (
        cert.iterations,
        cert.final_loss,
        cert.loss_history,
    )
    assert again.evaluations == cert.evaluations + 1  # the resumed point is evaluated again
    _assert_same_weights(whole, resumed)


def _plateau(store, checkpoint):
    spec = store.spec
    model = _model(store, "NSE-1")
    params = SolverParams(lr=1e-2, batch=4, check_every=3, patience=1, max_iterations=60)
    train_ids, _ = holdout_split(spec.n_chunks, 0.2)
    # the synthetic labels are noise, so a true held-out loss only rises: measure the
    # "held-out" loss on training chunks to get a fit that improves, then plateaus
    held = [store.read_chunk(i) for i in train_ids[:2]]
    with ChunkStream(store, seed=1, chunk_ids=train_ids) as source:
        method = PlateauAdam(
            model,
            source,
            lambda: ((c.features, c.labels) for c in held),
            spec.resolution,
            CPU,
            params,
        )
        cert = drive(method, checkpoint=checkpoint, save_every_s=0)
    return model, cert


def test_resumed_plateau_fit_ends_with_the_uninterrupted_weights(synthetic):
    """Saved at held-out checks with the best weights and the plateau counters: resumed at
    every save, the fit stops at the same step with the same best weights."""
    recorder = MemoryCheckpoint()
    whole, cert = _plateau(synthetic, recorder)
    saves = [s["iteration"] for s in recorder.states]
    assert len(saves) >= 3 and all(i % 3 == 0 for i in saves)
    for resume_at in saves[1:]:
        resumed, again = _plateau(synthetic, MemoryCheckpoint(resume_at, recorder.states))
        assert again.resumed_from == resume_at
        assert (again.iterations, again.final_loss, again.converged) == (
            cert.iterations,
            cert.final_loss,
            cert.converged,
        )
        _assert_same_weights(whole, resumed)

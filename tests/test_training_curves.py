"""Fig 8 (mIoU during training): the driver's snapshots change nothing about a fit and survive
its resume, and the analysis scores Table 1's snapshots, ending on Table 1's own mIoU."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import tasks.analyses.training_curves.step as curves
from lineargan.config import FitConfig, RunConfig, Schedule, SolverParams
from lineargan.convex import LBFGSSolve
from lineargan.driver import FitMethod, FitResult, drive, is_snapshot_point, snapshot_points
from lineargan.evaluate import evaluate_subsets
from lineargan.extractors import build_extractor
from lineargan.plateau import PlateauAdam
from lineargan.render import miou_from_rows
from lineargan.training import ScheduledAdam
from storage.checkpoints import FitSnapshots, PartialFit, load_extractor
from storage.feature_store import FeatureStore
from storage.stream import ChunkStream
from storage.target import Target
from tasks.analyses.registry import analysis_params
from tasks.analyses.runner import run_and_finish
from tasks.analyses.table1.science import Table1Params, table1_summary
from tasks.analyses.training_curves.science import TrainingCurvesParams, first_images
from tasks.evaluate import evaluate_fit
from tasks.fit import fit_extractor, full_batch, holdout_split

CPU = torch.device("cpu")
# 2 epochs at batch 1 and 4 at batch 4 over 8 samples: 16 + 8 = 24 steps, the lr drops at epoch 3
SCHEDULE = Schedule(phases=((2, 1), (4, 4)), samples_per_epoch=8, lr=1e-2, lr_drop_epoch=3)
SOLVER = SolverParams(
    grad_tol=1e-3, change_tol=1e-4, max_iterations=40, batch=8, check_every=5, patience=2
)
FITS = (
    FitConfig(extractor="LSE", schedule=SCHEDULE),
    FitConfig(extractor="NSE-1", schedule=SCHEDULE),
    FitConfig(extractor="LSE", method="converged", solver=SOLVER),
    FitConfig(extractor="NSE-1", method="converged", solver=SOLVER),
)


class Recorder:
    """A snapshot sink in memory."""

    def __init__(self) -> None:
        self.saved: dict[int, dict[str, torch.Tensor]] = {}

    def save(self, iteration: int, weights: dict[str, torch.Tensor]) -> None:
        self.saved[iteration] = weights


@pytest.fixture(scope="module")
def store(train_store_url) -> FeatureStore:
    return FeatureStore.open(Target(train_store_url), require_complete=True)


def _model(store: FeatureStore, kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = store.spec
    return build_extractor(kind, len(spec.class_names), [s[0] for s in spec.layer_shapes])


def _method(store: FeatureStore, kind: str, stack: ExitStack) -> tuple[torch.nn.Module, FitMethod]:
    """A fit of each method on the real store (every stream it opens entered on ``stack``)."""
    spec = store.spec
    if kind == "lbfgs":
        model = _model(store, "LSE")
        return model, LBFGSSolve(model, full_batch(store), spec.resolution, CPU, SOLVER)
    if kind == "plateau":
        model = _model(store, "NSE-1")
        train_ids, held_ids = holdout_split(spec.n_chunks, 0.25)
        held = [store.read_chunk(i) for i in held_ids]
        source = stack.enter_context(ChunkStream(store, seed=1, chunk_ids=train_ids))
        chunks = lambda: ((c.features, c.labels) for c in held)  # noqa: E731
        return model, PlateauAdam(model, source, chunks, spec.resolution, CPU, SOLVER, seed=1)
    model = _model(store, kind)
    source = stack.enter_context(ChunkStream(store, seed=1))
    return model, ScheduledAdam(model, source, SCHEDULE, spec.resolution, CPU, seed=1)


def _run(store: FeatureStore, kind: str, **kwargs) -> tuple[torch.nn.Module, FitResult]:
    """One fit of ``kind`` under the driver (``kwargs``: checkpoint, snapshots)."""
    with ExitStack() as stack:
        model, method = _method(store, kind, stack)
        result = drive(method, save_every_s=0, **kwargs)
    return model, result


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_snapshot_points_are_the_powers_of_two():
    assert snapshot_points(0) == []
    assert snapshot_points(1) == [1]
    assert snapshot_points(24) == [1, 2, 4, 8, 16]
    assert snapshot_points(6656) == [2**k for k in range(13)]  # the paper's schedule: 1 … 4096
    assert [i for i in range(1, 70) if is_snapshot_point(i)] == [1, 2, 4, 8, 16, 32, 64]
    assert not is_snapshot_point(0)


@pytest.mark.parametrize("kind", ["LSE", "NSE-2", "lbfgs", "plateau"])
def test_snapshots_change_nothing_about_the_fit(store, kind):
    """The fit the pipeline ran before snapshots existed (no sink) and the same fit with a sink
    end with identical weights, steps, losses and RNG state; the sink got every power of two."""
    plain, before = _run(store, kind)
    rng_plain = torch.get_rng_state()
    sink = Recorder()
    snapped, after = _run(store, kind, snapshots=sink)
    assert torch.equal(torch.get_rng_state(), rng_plain)  # nothing drew from the RNG
    _same_weights(plain.state_dict(), snapped.state_dict())
    assert (after.iterations, after.final_loss, after.loss_history) == (
        before.iterations,
        before.final_loss,
        before.loss_history,
    )
    assert list(sink.saved) == snapshot_points(after.iterations)
    assert len(sink.saved) >= 3
    # snapshots are copies: the first one is not the final weights
    first = sink.saved[1]
    assert any(not torch.equal(first[k], v) for k, v in snapped.state_dict().items())


def test_an_lbfgs_snapshot_is_the_solution_after_that_many_steps(store):
    """The weights a converged LSE had after 4 steps are what a solve capped at 4 steps returns
    (the iterate written as the model's T, layer weights included)."""
    sink = Recorder()
    _run(store, "lbfgs", snapshots=sink)
    spec = store.spec
    model = _model(store, "LSE")
    capped = SOLVER.model_copy(update={"max_iterations": 4})
    drive(LBFGSSolve(model, full_batch(store), spec.resolution, CPU, capped))
    _same_weights(sink.saved[4], model.state_dict())


class KilledPartial(PartialFit):
    """A partial-fit store whose process 'dies' right after the save at ``kill_at``."""

    def __init__(self, fit_dir: Path, kill_at: int) -> None:
        super().__init__(fit_dir)
        self.kill_at = kill_at

    def save(self, state: dict) -> None:
        super().save(state)
        if state["iteration"] >= self.kill_at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["LSE", "plateau"])
def test_snapshots_survive_a_killed_and_resumed_fit(store, tmp_path, kind):
    """Killed after its save at step 10 (schedule) / 10 (plateau's check), then rerun on the same
    directory: the snapshots taken before the kill are kept, the later ones rewritten, and
    every file equals the uninterrupted fit's byte for byte, as do the final weights."""
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    whole, _ = _run(
        store, kind, checkpoint=PartialFit(whole_dir), snapshots=FitSnapshots(whole_dir)
    )
    with pytest.raises(KeyboardInterrupt):
        _run(
            store,
            kind,
            checkpoint=KilledPartial(killed_dir, 10),
            snapshots=FitSnapshots(killed_dir),
        )
    before = sorted(p.name for p in (killed_dir / "snapshots").iterdir())
    assert before == [f"iteration-{i:08d}.safetensors" for i in (1, 2, 4, 8)]
    resumed, result = _run(
        store, kind, checkpoint=PartialFit(killed_dir), snapshots=FitSnapshots(killed_dir)
    )
    assert result.resumed_from == 10
    _same_weights(whole.state_dict(), resumed.state_dict())
    names = sorted(p.name for p in (whole_dir / "snapshots").iterdir())
    assert names == sorted(p.name for p in (killed_dir / "snapshots").iterdir())
    assert len(names) > len(before)
    for name in names:
        a = load_file(whole_dir / "snapshots" / name)
        b = load_file(killed_dir / "snapshots" / name)
        _same_weights(a, b)


def test_first_images_cuts_the_chunks():
    chunks = [
        ([np.arange(5 * 2).reshape(5, 2) + 100 * i], np.arange(5) + 10 * i, np.ones(5, bool))
        for i in range(3)
    ]
    got = list(first_images(iter(chunks), 7))
    assert [len(labels) for _, labels, _ in got] == [5, 2]
    np.testing.assert_array_equal(got[1][1], [10, 11])
    np.testing.assert_array_equal(got[1][0][0], chunks[1][0][0][:2])
    assert len(list(first_images(iter(chunks), None))) == 3


def test_defaults_are_table1_fits():
    for profile in ("smoke", "quick", "paper"):
        run = RunConfig(profile=profile)
        params = analysis_params(run, "training_curves")
        assert params.fits == tuple(run.table1_fits().values())
        # the paper's quantity (training samples), on as many images as Table 1 evaluates
        assert params.split == "train" and params.max_images == run.resolved_profile.n_eval
    with pytest.raises(ValueError, match="may appear once"):
        TrainingCurvesParams(fits=(FitConfig(), FitConfig()))


@pytest.fixture(scope="module")
def table1_fits(train_store_url, tmp_path_factory) -> tuple[str, dict[str, dict]]:
    """Table 1's four fits (both methods of LSE and NSE-1), trained by Table 1's own routine."""
    root = str(tmp_path_factory.mktemp("curves") / "results")
    metas = {}
    for cfg in FITS:
        meta = fit_extractor(train_store_url, cfg, root, device="cpu")
        metas[meta["fit_label"]] = meta
    return root, metas


def test_fig8_scores_table1_snapshots_and_ends_on_table1(
    table1_fits, ctx, eval_store_url, monkeypatch
):
    root, metas = table1_fits
    ctx = replace(ctx, results_root=root)
    evals = FeatureStore.open(Target(eval_store_url), require_complete=True)

    def no_fit(*args, **kwargs):
        raise AssertionError("Fig 8 must reuse the fits Table 1 handed over")

    monkeypatch.setattr(curves, "fit_extractor", no_fit)
    monkeypatch.setattr(curves, "fit_or_reuse", no_fit)
    on_eval = TrainingCurvesParams(fits=FITS, split="eval")  # Table 1's images
    result = run_and_finish("training_curves", ctx, on_eval, fits=metas)
    table1_params = Table1Params(
        fits={label: FitConfig(**m["fit_config"]) for label, m in metas.items()}
    )
    done = run_and_finish("table1", ctx, table1_params, fits=metas)
    t1 = pd.read_parquet(done.tables["table1"])
    assert result.fits == [m["fit_dir"] for m in metas.values()]
    summary = pd.read_parquet(result.tables["training_curve_summary"])
    rows = pd.read_parquet(result.tables["training_curve"])
    assert set(summary["fit_label"]) == set(metas)
    for label, meta in metas.items():
        fit = summary[summary["fit_label"] == label]
        steps = fit[fit["point"] == "snapshot"]
        assert list(steps["iteration"]) == snapshot_points(meta["iterations"])
        (final,) = fit[fit["point"] == "final"].itertuples()
        assert final.iteration == final.iterations == meta["iterations"]
        # the curve ends on Table 1's numbers to the last bit, and scoring the returned weights
        # here (as a split other than Table 1's images does) gives the same IoUs
        row = t1[t1["fit_key"] == meta["fit_key"]]
        assert final.miou == row["miou"].item()
        assert final.miou_detected == row["miou_detected"].item()
        table1_rows = evaluate_fit(meta, eval_store_url, root, "smoke", "test-run", "cpu")
        own = curves.score_fit(meta, evals, on_eval, CPU)
        own_final = own[own["point"] == "final"]
        for subset in ("all", "detected"):
            got = own_final[own_final["subset"] == subset]
            assert miou_from_rows(got) == miou_from_rows(table1_rows[subset])
        # training moves the mIoU: the first snapshot is not the end
        assert steps["miou"].iloc[0] != final.miou
    # the schedule LSE ran 24 steps: the per-class rows hold 1, 2, 4, 8, 16 and the end
    lse = rows[(rows["fit_label"] == "LSE") & (rows["subset"] == "all")]
    n_class = len(metas["LSE"]["class_names"]) - 1  # background left out
    assert len(lse) == 6 * n_class and (lse["split"] == "eval").all()
    assert "returned" in result.markdown and "Table 1's mIoU" in result.markdown
    assert any(Path(f).name.startswith("training-curves-smoke-") for f in result.figures)
    assert {Path(f).suffix for f in result.figures} == {".png", ".pdf"}


def test_a_snapshot_scores_what_its_weights_score(table1_fits, ctx, train_store_url):
    """One snapshot checked by hand: its stored weights, evaluated directly on the first 20
    training images, give the analysis's per-class IoU (split="train", max_images=20)."""
    root, metas = table1_fits
    ctx = replace(ctx, results_root=root)
    params = TrainingCurvesParams(fits=FITS[:1], split="train", max_images=20)
    result = run_and_finish("training_curves", ctx, params, fits=metas)
    summary = pd.read_parquet(result.tables["training_curve_summary"])
    assert (summary["n_images"] == 20).all() and (summary["split"] == "train").all()
    rows = pd.read_parquet(result.tables["training_curve"])
    got = rows[(rows["iteration"] == 8) & (rows["point"] == "snapshot") & (rows["subset"] == "all")]
    model = FitSnapshots(metas["LSE"]["fit_dir"]).load(8)
    store = FeatureStore.open(Target(train_store_url), require_complete=True)
    feats, labels = store.read_samples(list(range(20)))
    (want,) = evaluate_subsets(
        [model],
        [(feats, labels, None)],
        store.spec.class_names,
        store.spec.resolution,
        CPU,
    )
    np.testing.assert_array_equal(got["iou"].to_numpy(), want["all"].iou[1:])


def test_a_fit_without_snapshots_is_trained_again_with_them(table1_fits, ctx, eval_store_url):
    """A Table 1 fit finished before fits kept snapshots: Fig 8 trains the same fit again into
    a directory of its own (same final weights), and its curve ends on the same mIoU."""
    root, metas = table1_fits
    meta = metas["LSE"]
    legacy_root = Path(ctx.results_root)
    legacy_dir = legacy_root / "fits" / Path(meta["fit_dir"]).name
    shutil.copytree(meta["fit_dir"], legacy_dir)
    shutil.rmtree(legacy_dir / "snapshots")
    legacy = {"LSE": {**meta, "fit_dir": str(legacy_dir)}}
    result = run_and_finish(
        "training_curves", ctx, TrainingCurvesParams(fits=FITS[:1], split="eval"), fits=legacy
    )
    (refit,) = result.fits
    assert Path(refit).name.startswith("lse-snapshots-") and refit != str(legacy_dir)
    _same_weights(load_extractor(refit)[0].state_dict(), load_extractor(legacy_dir)[0].state_dict())
    summary = pd.read_parquet(result.tables["training_curve_summary"])
    final = summary[summary["point"] == "final"]["miou"].item()
    table1_rows = evaluate_fit(meta, eval_store_url, root, "smoke", "test-run", "cpu")
    assert final == table1_summary(table1_rows["all"])["miou"].item()
    assert list(summary[summary["point"] == "snapshot"]["iteration"]) == snapshot_points(24)

"""Few-shot LSE (Table 2): index draws, the fixed-sample source, statistics, the analysis job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tasks.fit
from lineargan.analyses.fewshot import (
    EpochRefreshedSamples,
    FewShotParams,
    FixedSamples,
    authors_iterations,
    choose_l2,
    choose_train_indices,
    fewshot_schedule,
    holdout_indices,
    max_deviation,
    summarize_runs,
)
from lineargan.config import RunConfig
from lineargan.driver import drive
from lineargan.errors import LinearGanError
from lineargan.evaluate import evaluate, evaluate_many
from lineargan.extractors import build_extractor
from lineargan.training import ScheduledAdam, skip_samples
from storage.feature_store import FeatureStore
from storage.target import Target
from tasks.analyses.fewshot import step as jobs
from tasks.analyses.fewshot.render import render_table2
from tasks.analyses.fewshot.science import fewshot_runs
from tasks.analyses.registry import get_analysis
from tasks.analyses.runner import run_and_finish
from tasks.run_context import RunContext
from tasks.store_models import noise_generator
from tests.conftest import build_synthetic_store, stylegan2_face_store, synthetic_spec

# -- science ----------------------------------------------------------------------------------


def test_train_indices_are_disjoint_random_and_seeded():
    draws = choose_train_indices(64, 8, 5, seed=3)
    assert [len(d) for d in draws] == [8] * 5
    flat = np.concatenate(draws)
    assert len(set(flat.tolist())) == 40  # pairwise disjoint
    assert flat.min() >= 0 and flat.max() < 64
    assert all((np.diff(d) > 0).all() for d in draws)
    assert not np.array_equal(np.sort(flat)[:40], np.arange(40))  # not simply the first images
    again = choose_train_indices(64, 8, 5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(draws, again, strict=True))
    other = choose_train_indices(64, 8, 5, seed=4)
    assert any(not np.array_equal(a, b) for a, b in zip(draws, other, strict=True))
    with pytest.raises(LinearGanError, match="40 training images"):
        choose_train_indices(30, 8, 5, seed=0)


def test_load_samples_and_fixed_source_serve_exactly_the_chosen_samples(memory_url):
    store = build_synthetic_store(memory_url, synthetic_spec(n=64, chunk_size=8))
    chosen = [40, 3, 17, 41]  # across chunks, unsorted: order is kept
    feats, labels = store.read_samples(chosen)
    assert labels[:, 0, 0].tolist() == chosen
    for f, shape in zip(feats, store.spec.layer_shapes, strict=True):
        assert f.shape == (4, *shape) and f.dtype == np.float16
        assert f.reshape(4, -1).max(1).tolist() == chosen
    source = FixedSamples(feats, labels)
    for _ in range(3):  # batch = N: every step is the whole set
        f, y = source.next_batch(4)
        assert y[:, 0, 0].tolist() == chosen
        assert [x.reshape(4, -1)[:, 0].tolist() for x in f] == [chosen] * 2
    cyc = FixedSamples(feats, labels)
    assert cyc.next_batch(3)[1][:, 0, 0].tolist() == [40, 3, 17]
    assert cyc.next_batch(3)[1][:, 0, 0].tolist() == [41, 40, 3]
    with pytest.raises(ValueError):
        store.read_samples([64])


def test_fewshot_schedule_drives_fit_with_the_same_batch_every_step(memory_url):
    sched = fewshot_schedule(4, 7)
    assert sched.iterations() == 7
    assert all(b == 4 for _, b in sched.epochs())
    assert sched.lr_drop_epoch == 3  # ÷10 after 40 % of the 7 iterations (round(2.8))
    assert fewshot_schedule(16, 500).lr_drop_epoch == 200
    never = fewshot_schedule(4, 7, drop_at=1.0)
    assert never.lr_drop_epoch > max(e for e, _ in never.epochs())

    store = build_synthetic_store(memory_url, synthetic_spec(n=16, chunk_size=8, resolution=4))
    feats, labels = store.read_samples([2, 9, 5, 14])
    source = FixedSamples(feats, labels)
    seen = []

    class Recording:
        def next_batch(self, batch_size):
            out = source.next_batch(batch_size)
            seen.append(out[1][:, 0, 0].tolist())
            return out

    model = build_extractor("LSE", n_class=16, dims=[2, 3])
    result = drive(ScheduledAdam(model, Recording(), sched, 4, torch.device("cpu")))
    assert result.iterations == 7
    assert seen == [[2, 9, 5, 14]] * 7


def test_max_deviation_and_summary_on_hand_made_numbers():
    assert max_deviation([0.5, 0.6, 0.7]) == pytest.approx(0.1)
    assert max_deviation([0.2, 0.2, 0.8]) == pytest.approx(0.4)  # mean 0.4
    assert max_deviation([0.3]) == 0.0
    runs = pd.DataFrame(
        {"n_shot": [4, 4, 4, 1, 1], "miou": [0.5, 0.6, 0.7, 0.2, 0.4], "repeat": [0, 1, 2, 0, 1]}
    )
    s = summarize_runs(runs, reference_miou=0.8)
    assert s["n_shot"].tolist() == [1, 4]
    assert s["repeats"].tolist() == [2, 3]
    assert s["mean_miou"].tolist() == pytest.approx([0.3, 0.6])
    assert s["max_dev"].tolist() == pytest.approx([0.1, 0.1])
    assert s["ratio_to_full"].tolist() == pytest.approx([0.375, 0.75])
    assert s["reference_miou"].tolist() == [0.8, 0.8]
    none = summarize_runs(runs)
    assert none["ratio_to_full"].isna().all() and none["reference_miou"].isna().all()
    per_class = pd.DataFrame(
        {"n_shot": [1, 4], "class_index": [1, 1], "class_name": ["skin"] * 2, "iou": [0.3, 0.6]}
    )
    md = render_table2({"fewshot_summary": s, "fewshot_per_class": per_class})
    cells = [[c.strip() for c in line.split("|")[1:5]] for line in md.splitlines() if "|" in line]
    assert ["1 (paper schedule)", "30.0 ± 10.0", "37.5%", "2"] in cells
    assert ["4 (paper schedule)", "60.0 ± 10.0", "75.0%", "3"] in cells
    assert ["full (paper schedule)", "80.0", "100%", "–"] in cells


def test_summary_and_table2_keep_fit_methods_apart():
    """Converged rows are summarised against the converged full LSE, schedule rows against the
    scheduled one, and Table 2 shows both kinds, labelled."""
    runs = pd.DataFrame(
        {
            "method": ["schedule"] * 2 + ["converged"] * 2,
            "n_shot": [4, 4, 4, 4],
            "miou": [0.2, 0.4, 0.5, 0.7],
        }
    )
    s = summarize_runs(runs, {"schedule": 0.5, "converged": 0.8})
    by = s.set_index("method")
    assert by.loc["schedule", "ratio_to_full"] == pytest.approx(0.6)
    assert by.loc["converged", "ratio_to_full"] == pytest.approx(0.75)
    assert summarize_runs(runs, {"schedule": 0.5})["ratio_to_full"].isna().sum() == 1
    per_class = pd.DataFrame(
        {
            "method": ["schedule", "converged"],
            "n_shot": [4, 4],
            "class_index": [1, 1],
            "class_name": ["skin"] * 2,
            "iou": [0.3, 0.6],
        }
    )
    md = render_table2({"fewshot_summary": s, "fewshot_per_class": per_class})
    cells = [[c.strip() for c in line.split("|")[1:5]] for line in md.splitlines() if "|" in line]
    assert ["4 (paper schedule)", "30.0 ± 10.0", "60.0%", "2"] in cells
    assert ["4 (ridge, λ chosen on held-out)", "60.0 ± 10.0", "75.0%", "2"] in cells
    assert ["full (converged)", "80.0", "100%", "–"] in cells
    rows = [c[0] for c in cells]
    assert rows.index("4 (paper schedule)") < rows.index("4 (ridge, λ chosen on held-out)")


def test_table2_shows_the_chosen_ridge_and_the_stopping_rule():
    """Each row says which λ its fits chose and how many met their stopping rule (a fit that
    hit the solver's cap is not passed off as converged)."""
    runs = pd.DataFrame(
        {
            "method": ["schedule"] * 3 + ["converged"] * 3,
            "n_shot": [8] * 6,
            "miou": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
            "converged": [None] * 3 + [True, False, True],
            "l2": [None] * 3 + [1e-2, 1e-3, 1e-2],
        }
    )
    s = summarize_runs(runs, {"schedule": 0.5, "converged": 0.8}).set_index("method")
    assert s.loc["converged", "stopped_by_rule"] == 2 and s.loc["schedule", "stopped_by_rule"] == 3
    assert s.loc["converged", "l2"] == "1e-03 ×1, 1e-02 ×2" and s.loc["schedule", "l2"] == ""
    per_class = pd.DataFrame(
        {
            "method": ["converged"],
            "n_shot": [8],
            "class_index": [1],
            "class_name": ["skin"],
            "iou": [0.6],
        }
    )
    md = render_table2({"fewshot_summary": s.reset_index(), "fewshot_per_class": per_class})
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines() if "|" in line]
    header = cells[0]

    def row(label: str) -> dict[str, str]:
        return dict(zip(header, next(c for c in cells if c[0] == label), strict=True))

    ridge = row("8 (ridge, λ chosen on held-out)")
    assert ridge["λ (ridge)"] == "1e-03 ×1, 1e-02 ×2" and ridge["stopping rule met"] == "2/3"
    sched = row("8 (paper schedule)")
    assert sched["λ (ridge)"] == "–" and sched["stopping rule met"] == "3/3"


def test_evaluate_many_matches_evaluate(eval_store_url):
    store = FeatureStore.open(Target(eval_store_url), require_complete=True)
    spec = store.spec
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(
            build_extractor("LSE", len(spec.class_names), [s[0] for s in spec.layer_shapes])
        )
    dev = torch.device("cpu")
    many = evaluate_many(
        models, ((c.features, c.labels) for _, c in store.iter_chunks()), spec.class_names, 64, dev
    )
    for model, res in zip(models, many, strict=True):
        one = evaluate(
            model,
            ((c.features, c.labels) for _, c in store.iter_chunks()),
            spec.class_names,
            64,
            dev,
        )
        np.testing.assert_array_equal(res.iou, one.iou)
        np.testing.assert_array_equal(res.images, one.images)
    assert not np.array_equal(many[0].iou, many[1].iou, equal_nan=True)


def test_params_for_run():
    paper = FewShotParams.for_run(RunConfig(profile="paper"))
    assert paper.shots == (1, 4, 8, 16) and paper.iterations == (2000, 2000, 1000, 500)
    assert paper.repeats == 5 and paper.lr == 1e-3 and paper.protocol == "paper"
    assert FewShotParams.for_run(RunConfig(profile="quick")).iterations == (500, 500, 250, 125)
    assert (paper.holdout, FewShotParams.for_run(RunConfig(profile="quick")).holdout) == (512, 128)
    # the authors' train_fewshot.py: 50 epochs of 128/N accumulated steps
    assert authors_iterations((1, 4, 8, 16)) == (6400, 1600, 800, 400)
    assert authors_iterations((3,)) == (50 * 43,)  # the last step of an epoch takes the rest
    authors = FewShotParams.for_run(RunConfig(profile="paper", protocol="authors"))
    assert authors.iterations == (6400, 1600, 800, 400) and authors.protocol == "authors"
    assert authors.fresh_noise and not paper.fresh_noise
    assert FewShotParams.for_run(RunConfig(profile="quick", protocol="authors")).iterations == (
        1600,
        400,
        200,
        100,
    )
    # the run's protocol reaches the analysis; the default stays the paper's
    defaults = get_analysis("fewshot").defaults
    assert defaults(RunConfig(profile="quick", protocol="authors"), {}).iterations == (
        1600, 400, 200, 100,
    )  # fmt: skip
    assert defaults(RunConfig(profile="quick"), {}).iterations == (500, 500, 250, 125)
    with pytest.raises(LinearGanError, match="repeated entries in l2_grid"):
        FewShotParams(l2_grid=(0.1, 0.1))
    smoke = FewShotParams.for_run(RunConfig(profile="smoke"))
    assert (smoke.shots, smoke.iterations, smoke.repeats) == ((1, 4), (20, 20), 2)
    with pytest.raises(LinearGanError):
        FewShotParams(shots=(1, 4), iterations=(10,))
    with pytest.raises(LinearGanError):
        FewShotParams.for_run(RunConfig(profile="nope"))


# -- the analysis job -------------------------------------------------------------------------

PARAMS = FewShotParams(shots=(1, 4), iterations=(10, 10), repeats=2, seed=0, methods=("schedule",))


def _ctx(train_url: str, eval_url: str, root: Path) -> RunContext:
    return RunContext(train_url, eval_url, str(root), "smoke", "test-run", device="cpu")


def _forbid(monkeypatch, training: bool = True, evaluation: bool = False) -> None:
    """Make training (the one fit loop) and/or the evaluation pass fail if called."""

    def boom(*a, **k):
        raise AssertionError("recomputed")

    if training:
        monkeypatch.setattr(tasks.fit, "drive", boom)
    if evaluation:
        monkeypatch.setattr(jobs, "evaluate_subsets", boom)


def _run(ctx: RunContext, params: FewShotParams, reference: float | None = None):
    return run_and_finish(
        "fewshot", ctx, params, reference={"LSE": reference} if reference else None
    )


def test_run_fewshot_tables_resume_and_determinism(
    train_store_url, eval_store_url, tmp_path, monkeypatch
):
    ctx = _ctx(train_store_url, eval_store_url, tmp_path / "a")
    res = _run(ctx, PARAMS, 0.5)
    assert not res.reused and set(res.tables) == {"fewshot", "fewshot_per_class", "fewshot_summary"}

    runs = pd.read_parquet(tmp_path / "a" / "tables" / "fewshot")
    assert sorted(zip(runs.n_shot, runs.repeat, strict=True)) == [(1, 0), (1, 1), (4, 0), (4, 1)]
    assert (runs.iterations == 10).all() and (runs.extractor == "LSE").all()
    assert {"generator", "segmenter", "profile", "run_id", "train_indices"} <= set(runs.columns)
    for n in (1, 4):
        idx = [
            [int(i) for i in s.split(",")]
            for s in runs[runs.n_shot == n].sort_values("repeat").train_indices
        ]
        expected = choose_train_indices(64, n, 2, 0)
        assert idx == [e.tolist() for e in expected]
        assert not set(idx[0]) & set(idx[1])
    assert runs.miou.between(0, 1).all()

    per_class = pd.read_parquet(tmp_path / "a" / "tables" / "fewshot_per_class")
    assert len(per_class) == 4 * 6 and "background" not in set(per_class.class_name)
    counted = per_class[per_class.images > 0].groupby(["n_shot", "repeat"])["iou"].mean()
    for r in runs.itertuples():
        assert r.miou == pytest.approx(counted[(r.n_shot, r.repeat)])

    summary = pd.read_parquet(tmp_path / "a" / "tables" / "fewshot_summary")
    for s in summary.itertuples():
        vals = runs[runs.n_shot == s.n_shot].miou
        assert s.mean_miou == pytest.approx(vals.mean())
        assert s.max_dev == pytest.approx((vals - vals.mean()).abs().max())
        assert s.ratio_to_full == pytest.approx(vals.mean() / 0.5)
    assert "Table 2" in res.markdown and "±" in res.markdown
    assert any(
        line.split("|")[1].strip() == "4 (paper schedule)"
        for line in res.markdown.splitlines()
        if "±" in line and line.startswith("|")
    )
    fits = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "a" / "fits").iterdir())
    assert fits == ["fewshot-n1-r0", "fewshot-n1-r1", "fewshot-n4-r0", "fewshot-n4-r1"]
    assert res.reports == [str(tmp_path / "a" / "reports" / f"table2-smoke-{res.key[:8]}.md")]
    assert Path(res.reports[0]).read_text() == res.markdown

    # Deterministic: the same params in a fresh results root give the same numbers.
    runs_b = _run(_ctx(train_store_url, eval_store_url, tmp_path / "b"), PARAMS, 0.5)
    again = pd.read_parquet(runs_b.tables["fewshot"]).sort_values(["n_shot", "repeat"])
    assert again.miou.tolist() == runs.sort_values(["n_shot", "repeat"]).miou.tolist()

    # Resume: a finished analysis is returned without recomputation.
    _forbid(monkeypatch, training=True, evaluation=True)
    summary_part = Path(res.tables["fewshot_summary"])
    written = summary_part.stat().st_mtime_ns
    done = _run(ctx, PARAMS, 0.5)
    assert done.reused and done.key == res.key and done.markdown == res.markdown
    assert summary_part.stat().st_mtime_ns == written  # same reference: nothing rewritten

    # Another reference only redoes the summary (no training, no evaluation).
    other = _run(ctx, PARAMS, 0.25)
    assert other.reused and other.key == res.key
    s2 = pd.read_parquet(other.tables["fewshot_summary"]).sort_values("n_shot")
    assert s2.ratio_to_full.tolist() == pytest.approx((4 * s2.mean_miou).tolist())


def test_holdout_images_avoid_every_draw_and_l2_choice():
    params = FewShotParams(shots=(1, 4), iterations=(5, 5), repeats=2, holdout=10)
    held = holdout_indices(64, params)
    drawn = {int(i) for n in (1, 4) for row in choose_train_indices(64, n, 2, 0) for i in row}
    assert len(held) == 10 and not drawn & set(held.tolist())
    assert list(held) == sorted(held) and np.array_equal(held, holdout_indices(64, params))
    assert len(holdout_indices(12, params)) == 12 - len(
        {int(i) for n in (1, 4) for row in choose_train_indices(12, n, 2, 0) for i in row}
    )  # fewer left than asked for: all of them
    with pytest.raises(LinearGanError, match="none is left to choose the ridge penalty on"):
        holdout_indices(8, params.model_copy(update={"shots": (4,), "iterations": (5,)}))
    assert choose_l2({1e-3: 0.2, 1e-2: 0.4, 1e-1: 0.3}) == 1e-2
    assert choose_l2({1e-3: 0.4, 1e-2: 0.4, 1e-1: float("nan")}) == 1e-2  # tie: larger λ


def test_converged_fewshot_rows_beside_the_schedule(train_store_url, eval_store_url, tmp_path):
    """Each (N, repeat) is also fitted to the stopping rule of the ridge-penalised loss on the
    same images, once per candidate λ, and keeps the λ with the best mIoU on held-out
    training images (never the evaluation ones); its ratio uses the converged full LSE; its
    loss is below the schedule's (the same objective plus a small penalty, minimised instead
    of stopped early)."""
    params = PARAMS.model_copy(
        update={
            "methods": ("schedule", "converged"),
            "shots": (4,),
            "iterations": (10,),
            "l2_grid": (1e-3, 1.0),
            "holdout": 24,
        }
    )
    ctx = _ctx(train_store_url, eval_store_url, tmp_path)
    res = run_and_finish("fewshot", ctx, params, reference={"LSE": 0.5, "LSE:converged": 0.8})
    runs = pd.read_parquet(tmp_path / "tables" / "fewshot")
    conv, sched = runs[runs.method == "converged"], runs[runs.method == "schedule"]
    assert len(conv) == len(sched) == 2
    assert conv.converged.all() and (conv.grad_norm <= params.solver.grad_tol).all()
    assert sched.converged.isna().all()
    # the same training images per repeat, whichever the method
    assert (
        conv.sort_values("repeat").train_indices.tolist()
        == sched.sort_values("repeat").train_indices.tolist()
    )
    assert (
        conv.sort_values("repeat").final_loss.to_numpy()
        < sched.sort_values("repeat").final_loss.to_numpy()
    ).all()
    summary = pd.read_parquet(tmp_path / "tables" / "fewshot_summary").set_index("method")
    assert summary.loc["converged", "reference_miou"] == 0.8
    assert summary.loc["converged", "ratio_to_full"] == pytest.approx(conv.miou.mean() / 0.8)
    assert "4 (ridge, λ chosen on held-out)" in res.markdown
    assert "4 (paper schedule)" in res.markdown
    fits = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "fits").iterdir())
    assert fits == [
        "fewshot-n4-r0",
        "fewshot-n4-r0-converged-ridge1e+00",
        "fewshot-n4-r0-converged-ridge1e-03",
        "fewshot-n4-r1",
        "fewshot-n4-r1-converged-ridge1e+00",
        "fewshot-n4-r1-converged-ridge1e-03",
    ]
    # the choice: every candidate scored on held-out training images, the best one kept
    ridge = pd.read_parquet(tmp_path / "tables" / "fewshot_ridge")
    assert len(ridge) == 4 and set(ridge.l2) == {1e-3, 1.0}
    train = FeatureStore.open(Target(train_store_url), require_complete=True)
    held = holdout_indices(train.spec.n, params)
    assert (ridge.n_holdout == len(held)).all() and 0 < len(held) <= 24
    for r in ridge.itertuples():
        model = jobs.load_extractor(r.fit_dir, torch.device("cpu"))[0]
        feats, labels = train.read_samples(held)
        want = evaluate(model, [(feats, labels)], train.spec.class_names, 64, torch.device("cpu"))
        assert r.holdout_miou == pytest.approx(want.miou)
    for repeat, cands in ridge.groupby("repeat"):
        best = cands.sort_values(["holdout_miou", "l2"]).iloc[-1]
        assert cands.chosen.sum() == 1 and cands[cands.chosen].l2.item() == best.l2
        row = conv[conv.repeat == repeat].iloc[0]
        assert row.l2 == best.l2 and row.fit_dir == best.fit_dir
        assert row.holdout_miou == pytest.approx(best.holdout_miou)
    assert summary.loc["converged", "stopped_by_rule"] == 2
    assert summary.loc["converged", "l2"] in {"1e-03 ×2", "1e+00 ×2", "1e-03 ×1, 1e+00 ×1"}


def test_run_fewshot_reloads_finished_checkpoints_after_a_crash(
    train_store_url, eval_store_url, tmp_path, monkeypatch
):
    root = tmp_path / "r"
    ctx = _ctx(train_store_url, eval_store_url, root)
    params = PARAMS.model_copy(update={"shots": (4,), "iterations": (10,)})
    first = _run(ctx, params)
    miou = pd.read_parquet(first.tables["fewshot"]).sort_values("repeat").miou.tolist()
    # Simulate a crash after training: only the checkpoints survive.
    for sub in ("tables", "manifests", "reports"):
        for p in sorted((root / sub).rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
    _forbid(monkeypatch)
    second = _run(ctx, params)
    assert not second.reused
    assert pd.read_parquet(second.tables["fewshot"]).sort_values("repeat").miou.tolist() == miou


def test_all_ignored_batches_are_skipped_not_nan(memory_url):
    """Category selection's "ignore" mode can hand the trainer a batch with no valid pixel."""
    store = build_synthetic_store(memory_url, synthetic_spec(n=16, chunk_size=8, resolution=4))
    feats, labels = store.read_samples([0, 1, 2, 3])
    ignored = np.full_like(labels, 255)
    batches = iter([(feats, ignored), (feats, labels), (feats, ignored), (feats, labels)])

    class Alternating:
        def next_batch(self, batch_size):
            return next(batches)

    model = build_extractor("LSE", n_class=16, dims=[2, 3])
    before = [p.detach().clone() for p in model.parameters()]
    method = ScheduledAdam(
        model, Alternating(), fewshot_schedule(4, 4), 4, torch.device("cpu"), ignore_index=255
    )
    result = drive(method, log_every=1)
    assert result.iterations == 4 and np.isfinite(result.final_loss)
    assert [it for it, _ in result.loss_history] == [2, 3, 4]  # nothing to report after batch 1
    assert all(np.isfinite(v) for _, v in result.loss_history)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_store_too_small_for_the_largest_n_fails_before_any_training(
    train_store_url, eval_store_url, tmp_path, monkeypatch
):
    ctx = _ctx(train_store_url, eval_store_url, tmp_path)
    params = PARAMS.model_copy(update={"shots": (1, 40), "iterations": (10, 10)})  # 80 > 64
    _forbid(monkeypatch)
    with pytest.raises(LinearGanError, match="80 training images"):
        _run(ctx, params)
    assert not (tmp_path / "fits").exists()


# -- the authors' fresh noise per epoch -------------------------------------------------------


def test_epoch_refreshed_samples_refresh_once_per_epoch_and_on_resume():
    feats, labels = [np.zeros((2, 1, 1, 1), np.float16)], np.zeros((2, 1, 1), np.uint8)
    calls: list[int] = []

    def refresh(epoch: int) -> list[np.ndarray]:
        calls.append(epoch)
        return [np.full((2, 1, 1, 1), epoch, np.float16)]

    src = EpochRefreshedSamples(feats, labels, refresh, epoch_steps=3)
    seen = [int(src.next_batch(2)[0][0][0, 0, 0, 0]) for _ in range(7)]
    assert seen == [0, 0, 0, 1, 1, 1, 2] and calls == [1, 2]
    resumed = EpochRefreshedSamples(feats, labels, refresh, epoch_steps=3)
    calls.clear()
    skip_samples(resumed, 5 * 2)  # 5 steps done before the crash: the next is epoch 1's last
    assert int(resumed.next_batch(2)[0][0][0, 0, 0, 0]) == 1 and calls == [1]
    assert int(resumed.next_batch(2)[0][0][0, 0, 0, 0]) == 2 and calls == [1, 2]


@pytest.fixture(scope="module")
def noisy_store(tmp_path_factory) -> str:
    """A StyleGAN2 store (random weights at 32 px, per-layer noise) labelled by a random face
    parser: a generator whose features change when its noise is drawn afresh."""
    return stylegan2_face_store(tmp_path_factory.mktemp("noisy"), "train", 0, 8, 8)


def test_fresh_noise_regenerates_features_each_epoch(noisy_store, train_store_url, tmp_path):
    """The authors' schedule draws the N images' per-layer noise afresh every epoch (same
    latents, same labels): seeded per epoch, so reruns agree; a generator without noise inputs
    (the embedded DCGAN) trains exactly as without it."""
    store = FeatureStore.open(Target(noisy_store), require_complete=True)
    params = FewShotParams(
        shots=(1,), iterations=(6,), repeats=1, methods=("schedule",), epoch_samples=2
    )
    noisy = noise_generator(store, "cpu")
    assert noisy is not None and getattr(noisy, "base", noisy).randomize_noise
    src = jobs.fresh_noise_source(store, noisy, np.array([3]), seed=5, steps=2)
    stored, _ = store.read_samples([3])
    assert all(np.array_equal(a, b) for a, b in zip(src.features, stored, strict=True))
    one, again, two = src.refresh(1), src.refresh(1), src.refresh(2)
    assert all(np.array_equal(a, b) for a, b in zip(one, again, strict=True))  # seeded
    assert not np.array_equal(one[-1], stored[-1]) and not np.array_equal(one[-1], two[-1])

    def fit(p: FewShotParams, root: Path, url: str = noisy_store) -> dict:
        ctx = _ctx(url, url, root)
        target = FeatureStore.open(Target(url), require_complete=True)
        run = fewshot_runs(p, target.spec.n)[0]
        return jobs.fit_fewshot(ctx, p, target, run)

    fresh = fit(params.model_copy(update={"fresh_noise": True}), tmp_path / "a")
    plain = fit(params, tmp_path / "a")
    rerun = fit(params.model_copy(update={"fresh_noise": True}), tmp_path / "b")
    assert fresh["fresh_noise_epoch_steps"] == 2 and "fresh_noise_epoch_steps" not in plain
    w = {
        k: jobs.load_extractor(m["fit_dir"], torch.device("cpu"))[0].state_dict()
        for k, m in {"fresh": fresh, "plain": plain, "rerun": rerun}.items()
    }
    assert any(not torch.equal(w["fresh"][k], w["plain"][k]) for k in w["fresh"])
    assert all(torch.equal(w["fresh"][k], w["rerun"][k]) for k in w["fresh"])
    # the DCGAN has no noise inputs: the same checkpoint whether asked or not
    dcgan = FeatureStore.open(Target(train_store_url), require_complete=True)
    assert noise_generator(dcgan, "cpu") is None
    on = fit(params.model_copy(update={"fresh_noise": True}), tmp_path / "c", train_store_url)
    off = fit(params, tmp_path / "c", train_store_url)
    assert on["fit_dir"] == off["fit_dir"]

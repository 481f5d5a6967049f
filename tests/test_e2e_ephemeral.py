"""The smoke profile end to end in ephemeral mode (no server), then a rerun that reuses work."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from tests.e2e_helpers import run_module


@pytest.mark.slow
def test_smoke_reproduce_then_rerun_reuses_everything(smoke_run):
    root, env, first = smoke_run
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout + first.stderr
    assert "computed 5 chunks, 0 already done" in out

    results = root / "results"
    t1 = pd.read_parquet(results / "tables" / "table1")
    assert sorted(zip(t1.method, t1.extractor, strict=True)) == [
        (m, e) for m in ("converged", "schedule") for e in ("LSE", "NSE-1", "NSE-2")
    ]
    assert (
        t1.miou.between(0, 1).all() and (t1.rel_diff <= 0).all() and (t1.rel_diff == 0).sum() >= 2
    )
    conv = t1[t1.method == "converged"].set_index("extractor")
    assert conv.loc["LSE", "grad_norm"] > 0 and (conv.iterations > 0).all()
    assert (conv.final_loss > 0).all() and conv.loc[["NSE-1", "NSE-2"], "grad_norm"].isna().all()
    assert t1.miou_detected.between(0, 1).all() and (t1.n_eval_detected <= t1.n_eval).all()
    iou = pd.read_parquet(results / "tables" / "iou_per_class")
    assert set(iou.class_name) == {"skin", "eyebrows", "eyes", "nose", "lips", "mouth"}
    (fig3,) = (results / "figures").glob("fig3-smoke-*.png")  # keyed like every figure
    assert fig3.stat().st_size > 1000
    table1_fits = [
        p
        for p in (results / "fits").iterdir()
        if re.fullmatch(r"(lse|nse-1|nse-2)(-converged)?-[0-9a-f]{16}", p.name)
    ]
    assert sorted(p.name.rsplit("-", 1)[0] for p in table1_fits) == [
        "lse",
        "lse-converged",
        "nse-1",
        "nse-1-converged",
        "nse-2",
        "nse-2-converged",
    ]
    # every analysis wrote its tables, and the index lists every file the run wrote
    index = pd.read_parquet(results / "tables" / "results_index")
    assert {
        "table1",
        "fewshot",
        "category_selection",
        "class_centers",
        "cosine_similarity",
        "layerwise",
        "baseline_segmenter",
        "scs",
        "sie",
        "training_curves",
    } <= set(index.experiment)
    for path in index.path:
        assert Path(path).exists(), path
    listed = [Path(p) for p in index.path]
    written = [p for p in results.rglob("*") if p.is_file() and p.parent.name != "results_index"]
    unlisted = [p for p in written if not any(p == q or q in p.parents for q in listed)]
    assert not unlisted, unlisted
    # the run's reports and `lineargan render` come from the same renderer: identical sections
    from tasks.analyses.registry import ANALYSES
    from tasks.render import paper_tables, render

    reports = {
        Path(p).name.split("-smoke-")[0]: Path(p).read_text()
        for p in index[index.kind == "report"].path
    }
    ran = [n for n, (analysis, _) in paper_tables().items() if not ANALYSES[analysis].optional]
    assert not {n for n in paper_tables() if n not in ran} & set(reports)  # opt-in: not run
    for name in ran:
        assert render(name, str(results), "smoke") == reports[name], name
    cli = run_module(
        "flows.cli", ["render", "all", "--profile", "smoke", "--results-root", str(results)], env
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    for name in ran:
        assert reports[name] in cli.stdout, name
    analysis_parts = {
        p: p.stat().st_mtime_ns
        for p in (results / "tables").glob("*/*.parquet")
        if p.parent.name != "results_index"
    }

    second = run_module("flows.reproduce", ["--profile", "smoke"], env)
    assert second.returncode == 0, second.stderr[-3000:]
    out2 = second.stdout + second.stderr
    assert "computed 0 chunks, 5 already done" in out2
    assert len(re.findall(r"\b(LSE|NSE-1|NSE-2) reused\b", out2)) == 3
    assert "LSE:converged reused" in out2
    # the same fits evaluated on the same store: the per-class table has no duplicate units
    iou2 = pd.read_parquet(results / "tables" / "iou_per_class")
    assert len(iou2) == len(iou)
    # resumed analyses (Table 1 too) were reused, not recomputed: no table part was rewritten
    assert {p: p.stat().st_mtime_ns for p in analysis_parts} == analysis_parts
    assert len(pd.read_parquet(results / "tables" / "results_index").run_id.unique()) == 2

"""Layer-wise analysis (Appx I): the Eq. 8 loss in ``fit`` and the analysis job."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import tasks.fit
from lineargan.analyses.fewshot import FixedSamples, fewshot_schedule
from lineargan.config import RunConfig, Schedule
from lineargan.driver import drive
from lineargan.evaluate import evaluate
from lineargan.extractors import build_extractor
from lineargan.extractors.base import LayerView
from lineargan.training import ScheduledAdam, to_tensors
from storage.checkpoints import load_extractor
from storage.feature_store import FeatureStore
from storage.target import Target
from tasks.analyses.layerwise import step as jobs
from tasks.analyses.layerwise.science import LayerwiseParams
from tasks.analyses.runner import run_and_finish
from tasks.run_context import RunContext

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def samples(train_store_url):
    store = FeatureStore.open(Target(train_store_url), require_complete=True)
    feats, labels = store.read_samples(list(range(8)))
    return store.spec, feats, labels


def _train(spec, feats, labels, iterations: int, **kwargs):
    torch.manual_seed(0)
    model = build_extractor("LSE", len(spec.class_names), [s[0] for s in spec.layer_shapes])
    sched = fewshot_schedule(len(labels), iterations)
    drive(ScheduledAdam(model, FixedSamples(feats, labels), sched, spec.resolution, CPU, **kwargs))
    return model


def test_zero_layer_weight_is_the_default_fit(samples):
    default = _train(*samples, iterations=5)
    zero = _train(*samples, iterations=5, layer_loss_weight=0.0)
    layered = _train(*samples, iterations=5, layer_loss_weight=0.1)
    for k, v in default.state_dict().items():
        assert torch.equal(v, zero.state_dict()[k])
    assert any(not torch.equal(v, layered.state_dict()[k]) for k, v in default.state_dict().items())


def test_layer_loss_lowers_every_layers_own_loss(samples):
    spec, feats, labels = samples
    xs, y = to_tensors(feats, labels, CPU)

    def layer_ce(model):
        with torch.no_grad():
            return [F.cross_entropy(s, y).item() for s in model.layer_logits(xs, spec.resolution)]

    plain = layer_ce(_train(*samples, iterations=30))
    layered = layer_ce(_train(*samples, iterations=30, layer_loss_weight=1.0))
    assert len(plain) == len(spec.layer_names)
    # What Eq. 8 guarantees is a lower total of the per-layer terms it adds to the objective
    # (a single layer may trade a little for the others on another BLAS build).
    assert sum(layered) < sum(plain), (plain, layered)
    assert sum(b < a for a, b in zip(plain, layered, strict=True)) >= len(plain) - 1


def test_params_for_run_use_the_run_schedule():
    for profile in ("smoke", "quick", "paper"):
        params = LayerwiseParams.for_run(RunConfig(profile=profile))
        assert params.schedule == RunConfig(profile=profile).fit("LSE").schedule
        assert params.alpha == 0.1
    assert LayerwiseParams().schedule.iterations() == 6656


def test_run_layerwise_tables_figures_and_resume(
    train_store_url, eval_store_url, tmp_path, monkeypatch
):
    ctx = RunContext(
        train_store_url, eval_store_url, str(tmp_path), "smoke", "test-run", device="cpu"
    )
    params = LayerwiseParams(
        schedule=Schedule(phases=((3, 4),), samples_per_epoch=8, lr_drop_epoch=2),
        figure_samples=2,
    )
    res = run_and_finish("layerwise", ctx, params)
    assert not res.reused and set(res.tables) == {"layerwise", "layerwise_summary"}

    spec = FeatureStore.open(Target(eval_store_url)).spec
    names = [*spec.layer_names, "all"]
    summary = pd.read_parquet(res.tables["layerwise_summary"])
    assert summary.layer_name.tolist() == names
    assert summary.layer_index.tolist() == [*range(len(spec.layer_names)), -1]
    assert summary.layer_size.tolist() == [4, 8, 16, 32, 64]
    assert (summary.iterations == 6).all() and (summary.alpha == 0.1).all()
    assert summary.miou.between(0, 1).all()
    assert summary.miou_detected.between(0, 1).all()
    assert (summary.n_eval_detected > 0).all() and (summary.n_eval_detected < summary.n_eval).all()

    rows = pd.read_parquet(tmp_path / "tables" / "layerwise")
    assert len(rows) == len(names) * (len(spec.class_names) - 1)
    assert {"generator", "segmenter", "profile", "run_id", "class_name"} <= set(rows.columns)
    counted = rows[rows.images > 0].groupby("layer_name")["iou"].mean()
    for r in summary.itertuples():
        assert r.miou == pytest.approx(counted[r.layer_name])

    # The "all" row is the ordinary evaluation of the saved checkpoint; a layer row is the
    # evaluation of that layer's logits alone.
    fit_dir = next((tmp_path / "fits").iterdir())
    model, meta = load_extractor(fit_dir)
    assert meta["alpha"] == 0.1 and meta["iterations"] == 6
    store = FeatureStore.open(Target(eval_store_url))
    for idx in (-1, 2):
        m = model if idx == -1 else LayerView(model, idx)
        chunks = ((c.features, c.labels) for _, c in store.iter_chunks())
        full = evaluate(m, chunks, spec.class_names, spec.resolution, CPU)
        assert summary[summary.layer_index == idx].miou.iloc[0] == pytest.approx(full.miou)

    png, pdf, seg = res.figures
    assert png.endswith(f"layerwise-smoke-{res.key[:8]}.png") and pdf == png[:-4] + ".pdf"
    plot = Image.open(io.BytesIO(Target(png).read_bytes()))
    assert plot.format == "PNG" and plot.size[0] > 300 and plot.size[1] > 200
    assert Target(pdf).read_bytes().startswith(b"%PDF")  # the vector version beside it
    grid = Image.open(io.BytesIO(Target(seg).read_bytes()))
    assert grid.size[0] > 2 * 64 and grid.size[1] > (len(names) + 2) * 64 * 3
    assert "block2_16x16" in res.markdown
    sum_row = next(line for line in res.markdown.splitlines() if line.startswith("| Σ"))
    assert [c.strip() for c in sum_row.split("|")][1:3] == ["Σ", "all"]
    assert (tmp_path / "reports" / f"layerwise-smoke-{res.key[:8]}.md").exists()

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(tasks.fit, "drive", boom)
    monkeypatch.setattr(jobs, "evaluate_subsets", boom)
    again = run_and_finish("layerwise", ctx, params)
    assert again.reused and again.key == res.key and again.figures == res.figures

"""The ``sefa`` analysis: the mask arithmetic on hand-made labels, the measurement loop on a
random-weight StyleGAN2 (layer groups), and the registered analysis on the small real stores
(the embedded DCGAN, dlib labels, Table 1's LSE handed over), killed and resumed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import lineargan.models.stylegan2_genforce  # noqa: F401 - registers stylegan2-genforce
from lineargan.analyses.sefa import (
    GLOBAL,
    Labeller,
    change_rows,
    class_changes,
    direction_rows,
    name_direction,
    supervised_gradients,
)
from lineargan.config import FitConfig, Schedule
from lineargan.extractors.base import build_extractor
from lineargan.models.registry import get_generator
from lineargan.predictors import ExtractorPredictor, freeze
from lineargan.sefa import edit, sefa
from storage.tables import read_table_part
from tasks.analyses.runner import run_and_finish
from tasks.analyses.sefa import step
from tasks.analyses.sefa.science import SefaParams
from tasks.fit import fit_extractor
from tests.test_stylegan2_genforce import random_state

NAMES = ("background", "skin", "eyes")
TINY = Schedule(phases=((1, 2),), samples_per_epoch=4)


def test_class_changes_on_hand_made_masks():
    before = np.zeros((2, 4, 4), np.uint8)
    before[:, :2] = 1  # skin: top half of both images
    before[0, 3, 3] = 2  # one eye pixel in image 0
    after = before.copy()
    after[0, 2, :] = 1  # image 0: skin grows by a row (4 px)
    after[1, 3, 3] = 2  # image 1: an eye appears
    rows = change_rows(class_changes(before, after, 3), NAMES).set_index("class_name")
    assert rows.changed_px.iloc[0] == 5
    assert rows.loc["skin", "relabelled_px"] == 4 and rows.loc["eyes", "relabelled_px"] == 1
    assert rows.loc["skin", "area_change"] == pytest.approx(4 / 32)
    assert rows.loc["skin", "iou"] == pytest.approx(16 / 20)
    assert rows.loc["eyes", "iou"] == pytest.approx(1 / 2)
    assert rows.loc["skin", "inside"] == pytest.approx(4 / 5)
    assert rows.loc["skin", "region"] == pytest.approx(20 / 32)
    assert rows.loc["background", "inside"] == pytest.approx(1.0)  # every change touches it


def _rows(relabelled: dict[int, int], region: dict[int, float], area: dict[int, float], changed):
    out = []
    for alpha, sign in ((-3.0, -1), (3.0, 1)):
        for c, name in enumerate(NAMES):
            out.append(
                {
                    "alpha": alpha,
                    "class_index": c,
                    "class_name": name,
                    "relabelled_px": relabelled[c],
                    "region": region[c],
                    "area_change": sign * area[c],
                    "changed_px": changed,
                }
            )
    return pd.DataFrame(out)


def test_directions_are_named_only_by_a_local_dominant_class():
    params = SefaParams(alphas=(-3, 3))
    # the eyes' small region holds 90 % of the changes: a local, semantic direction
    eyes = _rows({0: 100, 1: 10, 2: 90}, {0: 0.5, 1: 0.4, 2: 0.05}, {0: 0, 1: 0, 2: -0.01}, 100)
    named = name_direction(eyes, params.naming)
    assert named["semantic"] and named["name"] == "eyes shrinks with +α"
    assert named["dominant_enrichment"] == pytest.approx(0.9 / 0.05)
    # skin holds 90 % too, but it covers 60 % of the image: a global change
    skin = _rows({0: 100, 1: 90, 2: 1}, {0: 0.6, 1: 0.6, 2: 0.02}, {0: 0, 1: 0.2, 2: 0}, 100)
    assert name_direction(skin, params.naming)["name"] == GLOBAL
    assert name_direction(skin, SefaParams(alphas=(-3, 3), enrichment=1.2).naming)["semantic"]
    still = _rows({0: 0, 1: 0, 2: 0}, {0: 1, 1: 0, 2: 0}, {0: 0, 1: 0, 2: 0}, 0)
    assert name_direction(still, params.naming)["name"] == "no change"


def test_measurement_on_a_random_stylegan2_per_layer_group(tmp_path):
    path = tmp_path / "sg2.pth"
    torch.save({"generator_smooth": random_state("genforce")}, path)
    g = freeze(get_generator("stylegan2-genforce", checkpoint=str(path)))
    torch.manual_seed(0)
    dims = [s[0] for s in g.layer_shapes()]
    lse = ExtractorPredictor(freeze(build_extractor("LSE", len(NAMES), dims)), "LSE")
    label = Labeller(g, lse, batch=4)
    latents = g.sample_latents(3, seed=0)
    params = SefaParams(n_directions=2, alphas=(-3, 0, 3), n_samples=3, reference=False)
    images, base = label(latents)
    per_group = {}
    for group in ("coarse", "fine"):
        fact = sefa(g, layers=group)
        rows = direction_rows(0, params.alphas, fact, latents, label, {"lse": base}, None, NAMES)
        assert set(rows.alpha) == {-3.0, 0.0, 3.0} and set(rows.labeller) == {"LSE"}
        assert (rows[rows.alpha == 0].changed == 0).all()  # α = 0: the same masks
        assert np.array_equal(label(edit(latents, fact, 0, 0.0))[0], images)
        per_group[group] = rows[rows.alpha == 3].changed.iloc[0]
        grads = supervised_gradients(g, lse, fact, latents, len(NAMES), 2)
        assert grads.shape == (len(NAMES), fact.dim) and np.abs(grads).sum() > 0
    assert per_group["coarse"] > 0 and per_group["fine"] > 0


@pytest.fixture(scope="module")
def lse_meta(tmp_path_factory, train_store_url):
    """Table 1's LSE as the DAG hands it over (a tiny schedule keeps the test fast)."""
    root = str(tmp_path_factory.mktemp("fits"))
    cfg = FitConfig(extractor="LSE", schedule=TINY)
    return cfg, fit_extractor(train_store_url, cfg, root, "cpu")


def test_sefa_analysis_on_the_real_stores_resumes_after_a_kill(
    ctx, lse_meta, generator, monkeypatch
):
    cfg, meta = lse_meta
    params = SefaParams(n_directions=2, alphas=(-3, 0, 3), n_samples=3, lse=cfg)
    real_supervised = step.supervised_gradients
    computed = []
    real_rows = step.direction_rows

    def counting_rows(k, *args, **kwargs):
        computed.append(k)
        return real_rows(k, *args, **kwargs)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the run is killed after both directions are measured

    monkeypatch.setattr(step, "direction_rows", counting_rows)
    monkeypatch.setattr(step, "supervised_gradients", killed)
    with pytest.raises(KeyboardInterrupt):
        run_and_finish("sefa", ctx, params, fits={"LSE": meta})
    assert computed == [0, 1]
    monkeypatch.setattr(step, "supervised_gradients", real_supervised)
    result = run_and_finish("sefa", ctx, params, fits={"LSE": meta})
    assert computed == [0, 1]  # resumed: no direction measured twice

    dirs = read_table_part(ctx.results_root, step.DIRECTIONS_TABLE, result.key)
    sem = read_table_part(ctx.results_root, step.SEMANTICS_TABLE, result.key)
    sup = read_table_part(ctx.results_root, step.SUPERVISED_TABLE, result.key)
    fact = sefa(generator)
    assert list(dirs.direction) == [0, 1]
    np.testing.assert_allclose(np.stack(dirs.vector), fact.directions[:2])
    np.testing.assert_allclose(dirs.eigenvalue, fact.eigenvalues[:2])
    assert set(sem.labeller) == {"LSE", "dlib-face68"} and len(sup) == 7 * 2
    lse_rows = sem[sem.labeller == "LSE"]
    assert (lse_rows[lse_rows.alpha == 0].changed == 0).all()
    assert (lse_rows[lse_rows.alpha == 3].changed > 0).all()  # α = 3 relabels pixels
    assert dirs.name.str.len().gt(0).all() and "SeFa" in result.markdown
    assert len(result.figures) == 1 and result.figures[0].endswith(".png")
    again = run_and_finish("sefa", ctx, params, fits={"LSE": meta})
    assert again.key == result.key and computed == [0, 1]  # finished: reused

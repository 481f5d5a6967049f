"""SCS (Table 3) and SIE (Fig 5) as registered analyses on the small real stores, and the SIE
edit set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lineargan.analyses.fewshot import FewShotParams
from lineargan.analyses.scs import SCSParams
from lineargan.analyses.sie import EditSpec, SIEParams, apply_edit, color_stroke
from lineargan.baseline import UNetParams
from storage.tables import read_table_part
from tasks.analyses.runner import run_and_finish

FEWSHOT = FewShotParams(shots=(1, 4), iterations=(20, 20), repeats=2)
UNET = UNetParams(steps=20, batch=8, width=8)


@pytest.fixture(scope="module")
def face_mask():
    """A face-like mask: skin disc, two eyes, a nose, lips."""
    m = np.zeros((32, 32), np.uint8)
    yy, xx = np.mgrid[:32, :32]
    m[(yy - 16) ** 2 + (xx - 16) ** 2 <= 12**2] = 1
    m[10:12, 10:13] = 3
    m[10:12, 19:22] = 3
    m[13:19, 14:17] = 4
    m[21:23, 13:19] = 5
    return m


@pytest.mark.parametrize("op", ["enlarge", "move", "remove", "add"])
def test_every_edit_changes_exactly_its_region(face_mask, op):
    spec = EditSpec(op=op, class_rank=1, amount=2)
    target, region, k = apply_edit(face_mask, spec, np.random.default_rng(0))
    assert region.any() and np.array_equal(region, target != face_mask)
    assert k == 4  # rank 1 = the second largest class after skin: the nose (18 px)
    grown = (target == k).sum() - (face_mask == k).sum()
    assert {"enlarge": grown > 0, "remove": (target == k).sum() == 0, "add": grown > 0}.get(
        op, (target == k).sum() > 0
    )
    # parts only replace their surroundings (skin), never another part
    assert set(np.unique(face_mask[region])) <= {1, k}


def test_colour_stroke_paints_the_region_only(face_mask):
    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    target, region, _ = apply_edit(face_mask, EditSpec(op="remove", class_rank=1), None)
    stroke = color_stroke(image, face_mask, target)
    assert np.array_equal(stroke[~region], image[~region])
    skin_colour = np.rint(image[face_mask == 1].mean(0))
    assert np.abs(stroke[region].astype(float) - skin_colour).max() <= 0.5


def test_scs_analysis_writes_table3_and_resumes(ctx):
    params = SCSParams(
        targets=2, samples=2, steps=5, shots=(1, 4), repeats=1, fewshot=FEWSHOT, unet=UNET
    )
    result = run_and_finish("scs", ctx, params)
    samples = read_table_part(ctx.results_root, "scs_samples", result.key)
    summary = read_table_part(ctx.results_root, "scs_summary", result.key)
    assert len(samples) == 3 * 2 * 2  # (1-shot, 4-shot, UNet) × 2 targets × 2 samples
    # the dlib reference has no gradient: the baseline is the UNet trained to mimic it, so named
    assert set(summary["predictor"]) == {"LSE", "UNet (surrogate)"}
    for column in ("agreement", "authors", "pooled"):
        assert summary[column].between(0, 1).all()
    assert set(summary["headline"]) == {"paper"} and set(samples["edit_space"]) == {"z"}
    assert "Table 3" in result.markdown and "SCS (4-shot LSE)" in result.markdown
    assert "SCS (UNet (surrogate))" in result.markdown
    assert all(len(lat) == 100 for lat in samples["latent"])  # every sample regenerable
    assert result.figures and result.figures[0].endswith(".png")
    again = run_and_finish("scs", ctx, params)
    assert again.reused


def test_scs_resumes_after_the_last_finished_predictor(ctx, monkeypatch):
    from tasks.analyses.scs import step as scs

    params = SCSParams(
        targets=1, samples=1, steps=2, shots=(1,), repeats=1, fewshot=FEWSHOT, unet=UNET
    )
    calls = []
    real = scs._sample_rows

    def flaky(entry, *args):
        calls.append(entry.slug)
        if entry.slug == "unet" and calls.count(entry.slug) == 1:
            raise RuntimeError("killed")
        return real(entry, *args)

    monkeypatch.setattr(scs, "_sample_rows", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        run_and_finish("scs", ctx, params)
    run_and_finish("scs", ctx, params)
    assert calls == ["lse-n1-r0", "unet", "unet"]  # the LSE's rows were kept, not recomputed


def test_sie_changes_the_edited_region_more_than_the_rest(ctx):
    fewshot = FewShotParams(shots=(8,), iterations=(20,), repeats=1, methods=("converged",))
    params = SIEParams(images=3, n_shot=8, fewshot=fewshot, unet=UNET, baseline="none")
    result = run_and_finish("sie", ctx, params)
    edits = read_table_part(ctx.results_root, "sie_edits", result.key)
    sie = edits[edits["method"] == "SIE"]
    assert len(sie) > 0 and set(edits["method"]) == {"SIE", "colour"}
    # the edit changes the semantics where it was asked for, far more than elsewhere
    assert sie["relabel_inside"].mean() > 2 * sie["relabel_outside"].mean()
    assert (sie["loss_final"] < sie["loss_initial"]).mean() > 0.5
    colour = edits[edits["method"] == "colour"]  # L_p keeps the pixels outside the stroke
    assert colour["change_inside"].mean() > colour["change_outside"].mean()
    summary = read_table_part(ctx.results_root, "sie_summary", result.key)
    assert "all" in set(summary["op"]) and "Fig 5" in result.markdown
    assert isinstance(summary, pd.DataFrame) and result.figures


def test_a_non_differentiable_reference_cannot_be_the_baseline(ctx):
    from lineargan.errors import LinearGanError

    params = SIEParams(images=1, n_shot=1, fewshot=FEWSHOT, baseline="reference", steps=1)
    with pytest.raises(LinearGanError, match="not differentiable"):
        run_and_finish("sie", ctx, params)

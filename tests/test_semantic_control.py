"""SCS (Table 3) and SIE (Fig 5) as registered analyses on the small real stores, and the SIE
edit set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lineargan.analyses.fewshot import FewShotParams
from lineargan.analyses.scs import SCSParams
from lineargan.analyses.sie import (
    EditSpec,
    SIEParams,
    apply_edit,
    color_stroke,
    edit_intervals,
    edit_mask,
    plan_edit,
    unregistrable,
)
from lineargan.baseline import UNetParams
from lineargan.config import FitConfig, SolverParams
from lineargan.models.deeplab_ade20k import DeepLabADE20KSegmenter
from lineargan.models.face_parser import FaceParserSegmenter
from lineargan.models.unet import UNetSegmenter
from storage.tables import read_table_part
from tasks.analyses.runner import run_and_finish
from tasks.analyses.sie.science import edit_set, own_targets, reference_reasons
from tasks.fit import fit_extractor

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


# Table 1's full LSE, fitted towards its optimum on the small store (a few seconds)
FULL_LSE = FitConfig(
    extractor="LSE",
    method="converged",
    solver=SolverParams(grad_tol=1e-3, change_tol=1e-4, max_iterations=60),
)


def test_sie_scores_each_operation_only_where_the_reference_sees_it(ctx, tmp_path):
    fewshot = FewShotParams(shots=(8,), iterations=(20,), repeats=1, methods=("converged",))
    params = SIEParams(
        images=3, n_shot=8, fewshot=fewshot, unet=UNET, baseline="none", lse=FULL_LSE
    )
    # Table 1's fit as the DAG hands it over (Needs.fits): SIE's full-LSE arm reuses it
    table1 = fit_extractor(ctx.train_url, FULL_LSE, str(tmp_path / "table1"), "cpu")
    result = run_and_finish("sie", ctx, params, {"LSE:converged": table1})
    assert table1["fit_dir"] in result.fits
    edits = read_table_part(ctx.results_root, "sie_edits", result.key)
    sie = edits[edits["method"] == "SIE"]
    assert len(sie) > 0 and set(edits["method"]) == {"SIE", "colour"}
    # Fig 5's three arms: the few-shot LSE, Table 1's full LSE (n_shot null), the colour edit
    arms = set(zip(sie["predictor"], sie["n_shot"].fillna(0), strict=True))
    assert arms == {("LSE", 8), ("LSE", 0)}
    # dlib draws every part from landmarks: remove (of a part it always draws) and add are
    # never scored by it, enlarge and move always are
    ops = edits.set_index("op")
    for op in ("remove", "add"):
        mine = ops.loc[[op]]
        assert not mine["reference_registers"].any()
        assert mine["agreement_inside"].isna().all() and mine["miou"].isna().all()
        assert mine["unscored_reason"].str.startswith("dlib-face68 ").all()
    scored = ops.loc[["enlarge", "move"]]
    assert scored["reference_registers"].all() and scored["agreement_inside"].notna().all()
    # the edit changes the semantics where it was asked for, far more than elsewhere
    assert sie["relabel_inside"].mean() > 2 * sie["relabel_outside"].mean()
    assert (sie["loss_final"] < sie["loss_initial"]).mean() > 0.5
    # P's own view is there for every SIE edit (P is pixel-wise: it sees removals and adds),
    # and it sees its edit happen more inside the region than the reference does
    assert sie["own_agreement_outside"].notna().all()
    assert (sie["own_region_pixels"] > 0).mean() > 0.5
    assert edits.loc[edits["method"] == "colour", "own_agreement_inside"].isna().all()
    colour = edits[edits["method"] == "colour"]  # L_p keeps the pixels outside the stroke
    assert colour["change_inside"].mean() > colour["change_outside"].mean()
    # the summary is per operation (no "all" row mixing scored and unscored operations)
    summary = read_table_part(ctx.results_root, "sie_summary", result.key)
    assert set(summary["op"]) == set(edits["op"]) and "all" not in set(summary["op"])
    assert len(summary) == 3 * summary["op"].nunique()  # 8-shot, full LSE, colour per op
    unscored = summary[summary["op"].isin(["remove", "add"])]
    assert (unscored["scored"] == 0).all() and unscored["agreement_inside"].isna().all()
    assert (unscored["unscored_reason"] != "").all()
    assert unscored["agreement_inside_lo"].isna().all()
    scored = summary[summary["op"].isin(["enlarge", "move"])]
    assert (scored["agreement_inside_lo"] <= scored["agreement_inside"]).all()
    assert (scored["agreement_inside"] <= scored["agreement_inside_hi"]).all()
    assert "Fig 5" in result.markdown and "SIE (full LSE)" in result.markdown
    assert "not scored" in result.markdown and "draws" in result.markdown
    # Fig 5: per shown edit (the first of each operation), a row of images, the reference's
    # masks and P's masks; columns: original, stroke / target, colour edit, two SIE results
    from PIL import Image

    png = next(f for f in result.figures if f.endswith(".png"))
    width, height = Image.open(png).size
    cell = 64 * 2 + 4
    assert height == 16 + 3 * summary["op"].nunique() * cell
    assert 0 < width - 5 * cell < 2 * cell  # the title column, then 5 tiles


def test_the_reference_dlib_cannot_register_a_removed_or_added_part(segmenter):
    # measured: a uniform grey image, where no face is, still gets every part from landmarks
    grey = np.full((1, 64, 64, 3), 128, np.uint8)
    out = segmenter.segment(grey)
    assert not out.detected[0]
    present = {segmenter.class_names[k] for k in np.unique(out.labels[0])}
    assert set(segmenter.always_drawn) <= present and segmenter.template_parts
    template, always = segmenter.template_parts, segmenter.always_drawn
    for name in ("eyes", "nose", "lips"):
        assert unregistrable("remove", name, template, always)
        assert unregistrable("add", name, template, always)
        assert not unregistrable("enlarge", name, template, always)
        assert not unregistrable("move", name, template, always)
    # the mouth (inner lips) vanishes when the lips close: dlib sees it removed, not added
    assert not unregistrable("remove", "mouth", template, always)
    assert unregistrable("add", "mouth", template, always)
    # a pixel-wise network (the face parser, a UNet, DeepLab) declares nothing: it can
    # register every operation
    for network in (FaceParserSegmenter, UNetSegmenter, DeepLabADE20KSegmenter):
        assert not network.template_parts and network.always_drawn == ()
    for op in ("enlarge", "move", "remove", "add"):
        assert not unregistrable(op, "eyes", False, ())


def test_the_edit_set_marks_the_reference_s_unregistrable_edits(face_mask, segmenter):
    image = np.zeros((1, 32, 32, 3), np.uint8)
    params = SIEParams(edits=tuple(EditSpec(op=op, class_rank=1) for op in ("move", "add")))
    edits = edit_set(face_mask[None], image, params)
    reasons = reference_reasons(edits, segmenter)
    assert [e["op"] for e in edits] == ["move", "add"]
    assert reasons[0] == "" and reasons[1].startswith("dlib-face68 draws each part once")


def test_the_sie_target_is_the_edit_carried_out_on_p_s_own_mask(face_mask):
    """P disagrees with the reference: its nose is a pixel wider on the right and it sees a
    mole of nose class on the cheek. The target is P's mask with P's own nose edited, never
    the reference's region pasted onto P's mask."""
    own = face_mask.copy()
    own[13:19, 17] = 4  # P's nose: one column wider than the reference's
    own[20, 6] = 4  # a stray nose pixel of P's on the cheek
    rng = np.random.default_rng(0)
    for op in ("enlarge", "move", "remove", "add"):
        plan = plan_edit(face_mask, EditSpec(op=op, class_rank=1, amount=2), rng)
        assert plan.class_index == 4 and plan.fill == 1  # the nose, over skin
        ref_target, ref_region = edit_mask(face_mask, plan)
        targets, regions = own_targets(own[None], [{"plan": plan}])
        target, region = targets[0], regions[0]
        assert np.array_equal(region, target != own) and region.any()
        assert np.array_equal(target[~region], own[~region])  # the rest is P's own mask
        if op == "remove":  # every nose pixel P sees goes, the ones the reference lacks too
            assert not (target == 4).any()
            pasted = np.where(ref_region, ref_target, own)  # the old fused target
            assert (pasted == 4).sum() == 7  # P's extra column and stray pixel stayed
        if op == "enlarge":  # P's wider nose grows from its own outline
            assert (target[14:18, 19] == 4).all() and (ref_target[14:18, 19] != 4).all()
        if op == "add":  # the disc sits where the reference's plan put it, in both views
            y, x = plan.centre
            assert target[y, x] == 4 and ref_target[y, x] == 4


def test_a_non_differentiable_reference_cannot_be_the_baseline(ctx):
    from lineargan.errors import LinearGanError

    params = SIEParams(images=1, n_shot=1, fewshot=FEWSHOT, baseline="reference", steps=1)
    with pytest.raises(LinearGanError, match="not differentiable"):
        run_and_finish("sie", ctx, params)


def test_sie_intervals_resample_edits_paired_across_methods():
    """Hand-made edits: a method that is the baseline plus 0.1 on every edit differs from it
    by exactly 0.1 in every resample (paired), however widely the edits spread; an unscored
    edit counts nowhere; the baseline's difference to itself is 0; no baseline, no difference."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.8, size=6)
    rows = []
    for predictor, shift in (("UNet (surrogate)", 0.0), ("LSE", 0.1)):
        for e, value in enumerate(base):
            rows.append(
                dict(method="SIE", predictor=predictor, n_shot=8 if shift else None, op="move",
                     image=e, edit="move-1", agreement_inside=value + shift,
                     own_agreement_inside=np.nan if e == 0 else value)
            )  # fmt: skip
    rows.append(dict(rows[0], method="colour", predictor="", n_shot=None))
    out = edit_intervals(pd.DataFrame(rows), n_boot=200, seed=3).set_index("predictor")
    lse, unet = out.loc["LSE"], out.loc["UNet (surrogate)"]
    assert lse["agreement_inside_vs_baseline"] == pytest.approx(0.1)
    assert lse["agreement_inside_vs_baseline_lo"] == pytest.approx(0.1)
    assert lse["agreement_inside_vs_baseline_hi"] == pytest.approx(0.1)
    assert unet["agreement_inside_vs_baseline_hi"] == 0.0
    assert base.min() < unet["agreement_inside_lo"] < base.mean() < unet["agreement_inside_hi"]
    # the unscored first edit is left out, not read as 0: its interval lies within the rest
    assert unet["own_agreement_inside_lo"] >= base[1:].min()
    assert unet["own_agreement_inside_hi"] <= base[1:].max()
    colour = out.loc[""]  # one edit, drawn every time: a point interval
    assert colour["agreement_inside_lo"] == colour["agreement_inside_hi"] == base[0]
    alone = edit_intervals(pd.DataFrame(rows[6:12]), n_boot=50, seed=0)
    assert alone["agreement_inside_vs_baseline"].isna().all()

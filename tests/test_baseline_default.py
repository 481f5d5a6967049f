"""The SCS/SIE baseline P follows the run's segmenter: the paper's (the evaluation segmenter
itself) where it is differentiable, the surrogate UNet, so labelled, for dlib; checked on
random-weight stores of the recipes' segmenters (a face parser and DeepLab) and on the
default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lineargan.models.face_parser as fp
from lineargan.analyses.fewshot import FewShotParams
from lineargan.analyses.scs import choose_targets
from lineargan.config import DatasetConfig, RunConfig
from lineargan.masks import MaskInfo, save_mask_png
from lineargan.models import DifferentiableSegmenter
from lineargan.models import registry as models
from lineargan.recipes import RECIPES
from storage.tables import read_table_part
from tasks.analyses.registry import analysis_params
from tasks.analyses.runner import run_and_finish
from tasks.cache import build_store
from tasks.run_context import RunContext
from tests.test_segmenters import _tiny_deeplab
from tests.test_stylegan2_genforce import random_state

FEWSHOT = FewShotParams(shots=(1,), iterations=(5,), repeats=1, methods=("converged",))
SMALL = {
    "scs": dict(targets=1, samples=1, steps=2, shots=[1], repeats=1, fewshot=FEWSHOT.model_dump()),
    "sie": dict(images=1, steps=2, n_shot=1, fewshot=FEWSHOT.model_dump()),
}
SEGMENTERS = {  # the recipes' segmenters, random and small enough for CPU at 32 px
    "face-parser-unet": ({"input_size": 32}, lambda: fp.FaceParsingUNet(15, base_width=4)),
    "deeplabv3-ade20k": ({"backbone": "resnest50", "classes": "stylegan2_church"}, _tiny_deeplab),
}


def test_the_default_baseline_follows_the_run_segmenter():
    for name in ("scs", "sie"):  # the embedded default: dlib has no gradient
        assert analysis_params(RunConfig(profile="smoke"), name).baseline == "unet"
    for r in RECIPES.values():  # every Table 1 column's segmenter is differentiable
        cfg = r.run_config("g.pth", "p.pth", "smoke")
        assert analysis_params(cfg, "scs").baseline == "reference", r.name
        assert analysis_params(cfg, "sie").baseline == "reference", r.name
        forced = r.run_config(
            "g.pth", "p.pth", "smoke", analysis_params={"sie": {"baseline": "unet"}}
        )
        assert analysis_params(forced, "sie").baseline == "unet"


class Mine(DifferentiableSegmenter):
    """A user's differentiable segmenter."""

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, :2]


def test_a_users_segmenter_counts_by_what_its_factory_returns(monkeypatch):
    def annotated() -> Mine:
        return Mine()

    def bare():  # says nothing: not taken for differentiable
        return Mine()

    for name, factory in (("mine", annotated), ("bare", bare), ("cls", Mine)):
        monkeypatch.setitem(models.SEGMENTERS, name, factory)
    assert models.segmenter_is_differentiable("mine") and models.segmenter_is_differentiable("cls")
    assert not models.segmenter_is_differentiable("bare")
    assert not models.segmenter_is_differentiable("dlib-face68")


@pytest.fixture(scope="module")
def random_recipe(tmp_path_factory):
    """name -> (RunContext over a StyleGAN2 store labelled by that random segmenter, RunConfig)."""
    out = {}
    for name, (options, net) in SEGMENTERS.items():
        root = tmp_path_factory.mktemp(name)
        torch.save(random_state("genforce"), root / "g.pth")
        torch.manual_seed(0)
        torch.save(net().state_dict(), root / "p.pth")
        models_ = dict(
            generator="stylegan2-genforce",
            generator_checkpoint=str(root / "g.pth"),
            segmenter=name,
            segmenter_checkpoint=str(root / "p.pth"),
            segmenter_options=options,
        )
        urls = [
            build_store(
                DatasetConfig(**models_, split=split, seed=seed, n=16, chunk_size=16),
                str(root / "data"),
                device="cpu",
            )
            for split, seed in (("train", 0), ("eval", 1))
        ]
        ctx = RunContext(
            train_url=urls[0],
            eval_url=urls[1],
            results_root=str(root / "results"),
            profile="smoke",
            run_id=name,
            device="cpu",
        )
        out[name] = ctx, RunConfig(profile="smoke", analysis_params=SMALL, **models_)
    return out


@pytest.mark.parametrize("segmenter", list(SEGMENTERS))
def test_scs_and_sie_use_the_reference_as_their_baseline(random_recipe, segmenter):
    ctx, config = random_recipe[segmenter]
    label = f"{segmenter} (reference)"
    for name, table, column in (
        ("scs", "scs_summary", "predictor"),
        ("sie", "sie_edits", "predictor"),
    ):
        params = analysis_params(config, name)
        assert params.baseline == "reference"
        result = run_and_finish(name, ctx, params)
        rows = read_table_part(ctx.results_root, table, result.key)
        assert label in set(rows[column]), (name, set(rows[column]))
        assert "UNet (surrogate)" not in set(rows[column])
    assert not list(Path(ctx.results_root).glob("fits/baseline-unet-*"))  # no UNet trained


def test_the_default_runs_scs_with_the_surrogate_unet_so_labelled(ctx):
    """dlib has no gradient: the default's baseline is the UNet trained on the cache, and its
    rows say it is a surrogate."""
    unet = {"steps": 10, "batch": 4, "width": 4, "depth": 2}
    config = RunConfig(profile="smoke", analysis_params={"scs": {**SMALL["scs"], "unet": unet}})
    params = analysis_params(config, "scs")
    assert params.baseline == "unet"
    result = run_and_finish("scs", ctx, params)
    rows = read_table_part(ctx.results_root, "scs_summary", result.key)
    assert set(rows["predictor"]) == {"LSE", "UNet (surrogate)"}
    assert "SCS (UNet (surrogate))" in result.markdown
    assert len(list(Path(ctx.results_root).glob("fits/baseline-unet-*"))) == 1


def test_a_target_mask_folder_drives_scs_on_a_recipe_store(random_recipe, tmp_path):
    """The paper's face protocol on a recipe: SCS's targets from a user's mask folder (here
    the face parser's own labels of the targets a run would draw, written as palette PNGs at
    twice the generator's resolution) give the numbers of the run that drew them itself, with
    the reference as the baseline."""
    ctx, config = random_recipe["face-parser-unet"]
    params = analysis_params(config, "scs")
    _, evals = ctx.stores()
    ids = choose_targets(
        evals.spec.n, evals.detected_flags(), params.targets, params.target_source, params.seed
    )
    labels = evals.read_selection(ids, images=False).labels
    folder = tmp_path / "masks"
    folder.mkdir()
    for t, mask in enumerate(labels):
        big = mask.repeat(2, axis=0).repeat(2, axis=1)  # nearest-neighbour resize undoes this
        save_mask_png(folder / f"t{t}.png", big, MaskInfo(evals.spec.class_names))
    drawn = run_and_finish("scs", ctx, params)
    given = run_and_finish("scs", ctx, with_masks(params, folder))
    assert given.key != drawn.key  # the folder (its digest) is in the key
    rows = {r.key: read_table_part(ctx.results_root, "scs_samples", r.key) for r in (drawn, given)}
    assert rows[given.key]["target_file"].tolist() == [
        f"t{t}.png" for t in rows[given.key]["target"]
    ]
    assert set(rows[given.key]["predictor"]) == {"LSE", "face-parser-unet (reference)"}
    for column in ("agreement", "agreement_initial", "candidate"):
        assert rows[given.key][column].tolist() == rows[drawn.key][column].tolist(), column

    # the folder's masks are what is scored: half of each target another class, lower agreement
    other = tmp_path / "other"
    other.mkdir()
    for t, mask in enumerate(labels):
        half = mask.copy()
        half[: len(half) // 2] = (mask[: len(half) // 2] + 1) % len(evals.spec.class_names)
        save_mask_png(other / f"t{t}.png", half, MaskInfo(evals.spec.class_names))
    changed = run_and_finish("scs", ctx, with_masks(params, other))
    scored = read_table_part(ctx.results_root, "scs_samples", changed.key)
    assert (scored["agreement_initial"] < rows[drawn.key]["agreement_initial"]).all()


def with_masks(params, folder: Path):
    """``params`` with targets from ``folder`` (validated, as a command line's would be)."""
    return type(params)(**{**params.model_dump(), "target_masks": str(folder)})

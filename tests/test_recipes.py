"""Recipes: every Table 1 column runs end to end from checkpoints in its own layout (random
weights at 32 px, the smoke profile), and prefect.yaml declares one deployment per column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import lineargan.models.face_parser as fp
from flows.recipes import deployments, recipe
from flows.runner import dask_cluster
from lineargan.errors import UnknownNameError
from lineargan.recipes import RECIPES, get_recipe
from tests.test_pggan_stylegan import (
    pggan_genforce_state,
    pggan_port_state,
    stylegan_genforce_state,
    stylegan_port_state,
)
from tests.test_segmenters import _tiny_deeplab
from tests.test_stylegan2_genforce import random_state, to_authors_layout

ROOT = Path(__file__).resolve().parents[1]

# The authors' released files are plain state dicts of their ports.
GENERATOR_STATES = {
    "pggan-lineargan": lambda: pggan_port_state(pggan_genforce_state()),
    "stylegan-lineargan": lambda: stylegan_port_state(stylegan_genforce_state()),
    "stylegan2-lineargan": lambda: to_authors_layout(random_state("genforce")),
}
# Small enough for CPU: the face UNet at 32 px input, DeepLab on a narrow ResNeSt-50.
SMALL_SEGMENTERS = {
    "face-parser-unet": {"input_size": 32},
    "deeplabv3-ade20k": {"backbone": "resnest50"},
}


@pytest.fixture(scope="module")
def cluster() -> str:
    """One Dask cluster for all recipes, as a user's external cluster would be."""
    with dask_cluster(None, 1) as address:
        yield address


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("recipe-ckpts")
    out = {}
    for name, state in GENERATOR_STATES.items():
        torch.save(state(), root / f"{name}.pth")
        out[name] = str(root / f"{name}.pth")
    torch.manual_seed(0)
    torch.save(fp.FaceParsingUNet(n_classes=15, base_width=4).state_dict(), root / "face.pth")
    torch.save(_tiny_deeplab().state_dict(), root / "deeplab.pth")
    out["face-parser-unet"] = str(root / "face.pth")
    out["deeplabv3-ade20k"] = str(root / "deeplab.pth")
    return out


def test_prefect_yaml_declares_one_deployment_per_recipe():
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    recipes = [d for d in declared if d["entrypoint"] == "flows/recipes.py:recipe"]
    assert recipes == deployments()  # regenerate with `python -m flows.recipes --prefect-yaml`
    assert [d["name"] for d in recipes] == list(RECIPES)
    assert len(RECIPES) == 9  # Table 1's columns


def test_unknown_recipe_is_a_one_line_error():
    with pytest.raises(UnknownNameError, match="stylegan2-ffhq"):
        get_recipe("stylegan3-ffhq")


def test_overrides_merge_into_the_recipe_options(checkpoints):
    r = get_recipe("stylegan2-church")
    cfg = r.run_config(
        checkpoints["stylegan2-lineargan"],
        checkpoints["deeplabv3-ade20k"],
        "smoke",
        segmenter_options={"backbone": "resnest50"},
        n_train=8,
    )
    assert cfg.segmenter_options == {"classes": "stylegan2_church", "backbone": "resnest50"}
    assert cfg.store_policy.regenerate and cfg.resolved_profile.n_train == 8


@pytest.mark.parametrize(
    "name, paper, authors",
    [
        ("stylegan2-ffhq", 10, 100),  # Appx H: 10 for faces; submit.py::scs: 100 for FFHQ
        ("stylegan2-bedroom", 100, 10),  # 100 for scenes; the launcher: 10 for bedroom
        ("stylegan2-church", 100, 100),
        ("pggan-celebahq", 10, 100),
    ],
)
def test_scs_candidates_follow_the_recipes_dataset_and_protocol(name, paper, authors):
    from tasks.analyses.registry import analysis_params

    r = get_recipe(name)
    for protocol, expected in (("paper", paper), ("authors", authors)):
        cfg = r.run_config("g.pth", "p.pth", "quick", protocol=protocol)
        assert analysis_params(cfg, "scs").candidates() == expected
        # a user's SCS settings merge into the recipe's, keeping its candidate counts
        mine = r.run_config(
            "g.pth", "p.pth", "quick", protocol=protocol, analysis_params={"scs": {"targets": 3}}
        )
        assert analysis_params(mine, "scs").candidates() == expected
        assert analysis_params(mine, "scs").targets == 3
    # the analysis's own protocol switch picks the recipe's count too
    switched = r.run_config(
        "g.pth", "p.pth", "quick", analysis_params={"scs": {"protocol": "authors"}}
    )
    assert analysis_params(switched, "scs").candidates() == authors
    explicit = r.run_config("g.pth", "p.pth", "quick", analysis_params={"scs": {"n_init": 7}})
    assert analysis_params(explicit, "scs").candidates() == 7


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_runs_table1_and_sefa_end_to_end(name, checkpoints, cluster, tmp_path):
    r = RECIPES[name]
    out = recipe(
        name,
        checkpoints[r.generator],
        checkpoints[r.segmenter],
        "smoke",
        {
            "segmenter_options": SMALL_SEGMENTERS[r.segmenter],
            "n_train": 32,
            "n_eval": 16,
            # SeFa on every family (its style layers: SeFa's coarse group), labelled by the LSE
            "analyses": ["sefa"],
            "analysis_params": {
                "sefa": {"n_directions": 1, "alphas": [-3, 3], "n_samples": 2, "layers": "coarse"}
            },
            "fit_methods": ["schedule"],
            "data_root": str(tmp_path / "data"),
            "results_root": str(tmp_path / "results"),
            "dask_address": cluster,
        },
    )
    table1 = pd.read_parquet(Path(out["results_root"]) / "tables" / "table1")
    assert sorted(table1.extractor) == ["LSE", "NSE-1", "NSE-2"]
    assert set(table1.generator) == {r.generator} and set(table1.segmenter) == {r.segmenter}
    assert table1.miou.between(0, 1).all()
    sefa = pd.read_parquet(Path(out["results_root"]) / "tables" / "sefa_directions")
    style = r.generator.startswith("stylegan")
    assert list(sefa.layers.iloc[0]) == ([0, 1] if style else []) and sefa.eigenvalue.gt(0).all()

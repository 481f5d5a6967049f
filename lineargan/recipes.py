"""Recipes: the paper's Table 1 columns as (generator, dataset, segmenter) presets.

Each column of Table 1 is one GAN trained on one dataset, labelled by one segmenter: UNet
face parsing for CelebAHQ and FFHQ, DeepLabV3 (ResNeSt-200, ADE20K) restricted to the authors'
class subset for LSUN bedroom and church (Appx E, ``figure/selected_labels.csv``). A recipe
fixes those choices and leaves the user only the two checkpoint paths; ``RunConfig`` fields
(profile, sizes, roots, options) can still be overridden. The weights cannot ship with the
project: docs/models.md says where each one comes from.

A recipe also fixes what the paper sets per dataset: SCS's number of candidates (Appx H: 10
for faces, 100 for scenes; the authors' launcher ``submit.py::scs``: 10 bedroom, 100 church,
100 FFHQ), per protocol, as the run's ``scs.n_init_per_protocol``.

Features are regenerated on read by default: at the paper's 51,200 images even a 256-px
StyleGAN2 would need terabytes of float16 features (``storage.size`` prints the estimate),
and regeneration is what the authors' training loop does anyway.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lineargan.analyses.scs import FACE_N_INIT
from lineargan.config import ProtocolName, RunConfig
from lineargan.errors import UnknownNameError
from lineargan.store_policy import StorePolicy

FACE_PARSER = "face-parser-unet"
DEEPLAB = "deeplabv3-ade20k"
# SCS candidates per protocol for the LSUN scenes (faces: FACE_N_INIT, 10 / 100)
SCENE_N_INIT: dict[str, dict[ProtocolName, int]] = {
    "bedroom": {"paper": 100, "authors": 10},
    "church": {"paper": 100, "authors": 100},
}


class Recipe(BaseModel):
    """One Table 1 column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    gan: str
    dataset: str
    resolution: int = Field(description="resolution of the paper's checkpoint")
    generator: str
    generator_options: dict[str, Any] = Field(default_factory=dict)
    segmenter: str
    segmenter_options: dict[str, Any] = Field(default_factory=dict)
    store_policy: StorePolicy = StorePolicy(features="regenerate")
    checkpoint: str = Field(description="the authors' file name of the generator weights")
    scs_n_init: dict[ProtocolName, int] = Field(
        default_factory=lambda: dict(FACE_N_INIT),
        description="SCS candidates per protocol for this dataset",
    )

    def run_config(
        self,
        generator_checkpoint: str,
        segmenter_checkpoint: str,
        profile: str = "paper",
        **overrides: Any,
    ) -> RunConfig:
        """The ``RunConfig`` of this column; ``overrides`` are any other RunConfig fields
        (option dicts are merged into the recipe's, not replaced; ``analysis_params`` per
        analysis, so a user's SCS settings keep the recipe's candidate counts)."""
        fields: dict[str, Any] = {
            "profile": profile,
            "generator": self.generator,
            "generator_checkpoint": generator_checkpoint,
            "generator_options": self.generator_options,
            "segmenter": self.segmenter,
            "segmenter_checkpoint": segmenter_checkpoint,
            "segmenter_options": self.segmenter_options,
            "store_policy": self.store_policy.model_dump(exclude_defaults=True),
            "analysis_params": {"scs": {"n_init_per_protocol": dict(self.scs_n_init)}},
        }
        for key, value in overrides.items():
            if key in ("generator_options", "segmenter_options", "store_policy"):
                fields[key] = {**fields[key], **value}
            elif key == "analysis_params":
                merged = dict(fields[key])
                for name, params in value.items():
                    merged[name] = {**merged.get(name, {}), **params}
                fields[key] = merged
            else:
                fields[key] = value
        return RunConfig(**fields)


def _lsun(gan: str, scene: str, resolution: int, generator: str, checkpoint: str) -> Recipe:
    return Recipe(
        name=f"{gan.lower()}-{scene}",
        gan=gan,
        dataset=f"LSUN {scene}",
        resolution=resolution,
        generator=generator,
        segmenter=DEEPLAB,
        segmenter_options={"classes": f"{gan.lower()}_{scene}"},
        checkpoint=checkpoint,
        scs_n_init=SCENE_N_INIT[scene],
    )


# In Table 1's column order. Generators default to the authors' ports (their released,
# converted state dicts); the genforce and rosinality layouts load the same networks.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="pggan-celebahq",
            gan="PGGAN",
            dataset="CelebAHQ",
            resolution=1024,
            generator="pggan-lineargan",
            segmenter=FACE_PARSER,
            checkpoint="pggan_celebahq.pth",
        ),
        _lsun("PGGAN", "bedroom", 256, "pggan-lineargan", "pggan_bedroom.pth"),
        _lsun("PGGAN", "church", 256, "pggan-lineargan", "pggan_church.pth"),
        Recipe(
            name="stylegan-celebahq",
            gan="StyleGAN",
            dataset="CelebAHQ",
            resolution=1024,
            generator="stylegan-lineargan",
            segmenter=FACE_PARSER,
            checkpoint="stylegan_celebahq.pth",
        ),
        _lsun("StyleGAN", "bedroom", 256, "stylegan-lineargan", "stylegan_bedroom.pth"),
        _lsun("StyleGAN", "church", 256, "stylegan-lineargan", "stylegan_church.pth"),
        Recipe(
            name="stylegan2-ffhq",
            gan="StyleGAN2",
            dataset="FFHQ",
            resolution=1024,
            generator="stylegan2-lineargan",
            segmenter=FACE_PARSER,
            checkpoint="stylegan2_ffhq.pth",
        ),
        _lsun("StyleGAN2", "bedroom", 256, "stylegan2-lineargan", "stylegan2_bedroom.pth"),
        _lsun("StyleGAN2", "church", 256, "stylegan2-lineargan", "stylegan2_church.pth"),
    )
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UnknownNameError("recipe", name, list(RECIPES))
    return RECIPES[name]

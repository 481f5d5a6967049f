"""One deployment per Table 1 column: ``prefect deployment run recipe/<name>`` with the two
checkpoint paths as parameters.

::

    prefect deployment run recipe/stylegan2-ffhq \\
        --param generator_checkpoint=/ckpt/stylegan2_ffhq.pth \\
        --param segmenter_checkpoint=/ckpt/faceparse_unet_512.pth
    python -m flows.recipes stylegan2-ffhq --generator-checkpoint ... --segmenter-checkpoint ...
    python -m flows.recipes --prefect-yaml     # the deployments block of prefect.yaml

The recipe (``lineargan.recipes``) fixes generator, segmenter, class subset and store policy;
``overrides`` takes any other ``RunConfig`` field (profile sizes, roots, options).
"""

from __future__ import annotations

from flows.interrupt import supervise

if __name__ == "__main__":
    supervise()  # before the heavy imports: the terminal's Ctrl-C reaches a small supervisor

import sys
from typing import Any

import yaml
from prefect import flow
from pydantic import BaseModel, Field

from flows.cli import parse_config, run_cli
from flows.preflight import check_run
from flows.reproduce import reproduce
from lineargan.recipes import RECIPES, get_recipe

POOL = "lineargan-process"


@flow(name="recipe", log_prints=True)
def recipe(
    recipe: str,
    generator_checkpoint: str,
    segmenter_checkpoint: str,
    profile: str = "paper",
    overrides: dict[str, Any] | None = None,
) -> dict:
    """Table 1 (and every analysis) for one of the paper's (GAN, dataset, segmenter) columns."""
    chosen = get_recipe(recipe)
    config = chosen.run_config(
        generator_checkpoint, segmenter_checkpoint, profile, **(overrides or {})
    )
    print(f"recipe {chosen.name}: {chosen.gan} on {chosen.dataset}, labelled by {chosen.segmenter}")
    return reproduce(config)


def deployments() -> list[dict[str, Any]]:
    """The recipe deployments as prefect.yaml declares them (a test keeps the file in sync)."""
    return [
        {
            "name": r.name,
            "description": f"Table 1 column {r.gan} / {r.dataset} ({r.resolution} px), labelled "
            f"by {r.segmenter}; pass generator_checkpoint ({r.checkpoint}) and "
            "segmenter_checkpoint (docs/models.md, 'Recipes').",
            "entrypoint": "flows/recipes.py:recipe",
            "parameters": {"recipe": r.name},
            "work_pool": {"name": POOL, "work_queue_name": "default", "job_variables": {}},
        }
        for r in RECIPES.values()
    ]


class RecipeArgs(BaseModel):
    """Run one recipe in ephemeral mode (no server)."""

    generator_checkpoint: str = Field(description="the generator's weights file")
    segmenter_checkpoint: str = Field(description="the segmenter's weights file")
    profile: str = "paper"
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="other RunConfig fields (JSON)"
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--prefect-yaml"]:
        print(yaml.safe_dump({"deployments": deployments()}, sort_keys=False), end="")
        return

    def go() -> None:
        if not args or args[0].startswith("-"):
            print(f"usage: python -m flows.recipes RECIPE [flags]; recipes: {', '.join(RECIPES)}")
            raise SystemExit(2)
        chosen = get_recipe(args[0])
        parsed, _ = parse_config(RecipeArgs, args[1:], f"python -m flows.recipes {chosen.name}", "")
        config = chosen.run_config(
            parsed.generator_checkpoint,
            parsed.segmenter_checkpoint,
            parsed.profile,
            **parsed.overrides,
        )
        check_run(
            config, keep=True
        )  # the recipe flow's run, checked before any server or cluster starts
        recipe(chosen.name, **parsed.model_dump())

    run_cli(go)


if __name__ == "__main__":
    main()

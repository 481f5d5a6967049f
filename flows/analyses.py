"""Submitting the paper's analyses (issue #4) as tasks of the current flow's runner.

Each analysis is keyed by its parameters and the stores it reads, so a resumed run returns
finished ones at once. Parameters follow the run's profile, updated by its ``analysis_params``
(:mod:`lineargan.jobs.params`).
"""

from __future__ import annotations

from prefect.futures import PrefectFuture

from lineargan.config import RunConfig
from lineargan.jobs.analysis import AnalysisContext
from lineargan.jobs.params import analysis_params
from tasks.category_selection import category_selection
from tasks.class_centers import class_centers
from tasks.cosine_similarity import cosine_similarity
from tasks.fewshot import fewshot
from tasks.layerwise import layerwise

# Analyses that need nothing but the cached stores: they start with the Table 1 fits.
INDEPENDENT = ("cosine_similarity", "layerwise")
# Analyses that show the full LSE's mIoU beside their own: they start once it is known.
NEED_LSE = ("fewshot", "class_centers")


def submit_independent(config: RunConfig, ctx: AnalysisContext) -> dict[str, PrefectFuture]:
    futures = {}
    if "cosine_similarity" in config.analyses:
        futures["cosine_similarity"] = cosine_similarity.submit(
            ctx, analysis_params(config, "cosine_similarity")
        )
    if "layerwise" in config.analyses:
        futures["layerwise"] = layerwise.submit(ctx, analysis_params(config, "layerwise"))
    return futures


def submit_with_reference(
    config: RunConfig, ctx: AnalysisContext, lse_miou: float | None
) -> dict[str, PrefectFuture]:
    futures = {}
    if "fewshot" in config.analyses:
        futures["fewshot"] = fewshot.submit(ctx, analysis_params(config, "fewshot"), lse_miou)
    if "class_centers" in config.analyses:
        futures["class_centers"] = class_centers.submit(
            ctx, analysis_params(config, "class_centers"), lse_miou
        )
    return futures


def submit_after_fits(config: RunConfig, ctx: AnalysisContext) -> dict[str, PrefectFuture]:
    """Category selection's first round reuses the Table 1 fits, so it starts after them."""
    if "category_selection" not in config.analyses:
        return {}
    return {
        "category_selection": category_selection.submit(
            ctx, analysis_params(config, "category_selection")
        )
    }

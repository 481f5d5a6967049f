"""Cosine-similarity task (Appx F, Algorithm 1, Fig 9)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from lineargan.jobs import cosine_similarity as jobs
from lineargan.jobs.analysis import AnalysisContext
from lineargan.jobs.cosine_similarity import CosineSimilarityParams


@task(name="cosine-similarity")
def cosine_similarity(ctx: AnalysisContext, params: CosineSimilarityParams) -> dict:
    """Fair per-class pools and the matrix of mean pairwise cosines."""
    result = jobs.run_cosine_similarity(ctx, params)
    create_markdown_artifact(key=f"cosine-similarity-{ctx.profile}", markdown=result.markdown)
    return result.to_dict()

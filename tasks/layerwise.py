"""Layer-wise analysis task (Appx I)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from lineargan.jobs import layerwise as jobs
from lineargan.jobs.analysis import AnalysisContext


@task(name="layerwise")
def layerwise(ctx: AnalysisContext, params: jobs.LayerwiseParams) -> dict:
    """Train the Eq. 8 LSE and score each layer alone (tables, PNGs, markdown artifact)."""
    result = jobs.run_layerwise(ctx, params)
    create_markdown_artifact(key=f"layerwise-{ctx.profile}", markdown=result.markdown)
    return result.to_dict()

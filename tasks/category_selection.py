"""Category selection task (Appx E, Tables 4 and 5)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from lineargan.jobs import category_selection as jobs
from lineargan.jobs.analysis import AnalysisContext


@task(name="category_selection")
def category_selection(ctx: AnalysisContext, params: jobs.CategorySelectionParams) -> dict:
    """Train on all classes, keep those with IoU > threshold for any extractor, retrain."""
    result = jobs.run_category_selection(ctx, params)
    create_markdown_artifact(key=f"category-selection-{ctx.profile}", markdown=result.markdown)
    return result.to_dict()

"""Class-centers task (Sec 3.3, Fig 4)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from lineargan.jobs import class_centers as jobs
from lineargan.jobs.analysis import AnalysisContext
from lineargan.jobs.class_centers import ClassCentersParams


@task(name="class-centers")
def class_centers(
    ctx: AnalysisContext, params: ClassCentersParams, lse_miou: float | None = None
) -> dict:
    """Nearest-class-center segmentation; ``lse_miou`` (Table 1's LSE) is shown alongside."""
    result = jobs.run_class_centers(ctx, params, lse_miou=lse_miou)
    create_markdown_artifact(key=f"class-centers-{ctx.profile}", markdown=result.markdown)
    return result.to_dict()

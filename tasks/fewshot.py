"""Few-shot LSE task (Table 2)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from lineargan.jobs import fewshot as jobs
from lineargan.jobs.analysis import AnalysisContext


@task(name="fewshot")
def fewshot(
    ctx: AnalysisContext, params: jobs.FewShotParams, reference_miou: float | None = None
) -> dict:
    """Train/evaluate every (N, repeat) few-shot LSE; ``reference_miou``: full LSE's mIoU."""
    result = jobs.run_fewshot(ctx, params, reference_miou)
    create_markdown_artifact(key=f"fewshot-{ctx.profile}", markdown=result.markdown)
    return result.to_dict()

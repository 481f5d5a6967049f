"""The two pipeline steps every analysis goes through, whatever it computes.

``run_analysis`` does the work (keyed, resumable); ``finish_analysis`` adds the numbers it
shows from other steps (Table 1's mIoUs) and renders its paper tables into the report. The
Prefect tasks in :mod:`tasks.prefect_tasks` wrap exactly these; tests call them directly.
"""

from __future__ import annotations

import pandas as pd
from pydantic import BaseModel

from lineargan.render import miou_from_rows
from storage.store_models import store_generator, store_segmenter
from storage.target import Target
from tasks.analyses.contract import AnalysisContext, AnalysisResult, Inputs
from tasks.analyses.registry import get_analysis
from tasks.process import tune_process
from tasks.render import render_experiment


def run_analysis(
    name: str, ctx: AnalysisContext, params: BaseModel, fits: dict[str, dict] | None = None
) -> AnalysisResult:
    """Run analysis ``name`` (or return its finished result); ``fits``: Table 1's fit metadata
    by extractor, for analyses that declare ``Needs.fits``."""
    spec = get_analysis(name)
    tune_process()
    Target(ctx.results_root).ensure_writable()
    inputs = Inputs(fits=dict(fits or {}))
    if spec.needs.generator or spec.needs.segmenter:
        store = ctx.train_store()
        if spec.needs.generator:
            inputs.generator = store_generator(store, ctx.device)
        if spec.needs.segmenter:
            inputs.segmenter = store_segmenter(store)
    return spec.run(ctx, spec.params.model_validate(params), inputs)


def finish_analysis(
    name: str,
    ctx: AnalysisContext,
    params: BaseModel,
    result: AnalysisResult,
    reference: dict[str, pd.DataFrame | float] | None = None,
) -> AnalysisResult:
    """Summarise with the reference mIoUs (by extractor: Table 1's per-class IoU rows of that
    fit, or the mIoU itself) and render the analysis's paper tables from the tables it wrote."""
    spec = get_analysis(name)
    if spec.summarize is not None:
        ref = {
            ext: miou_from_rows(rows) if isinstance(rows, pd.DataFrame) else float(rows)
            for ext, rows in (reference or {}).items()
        }
        spec.summarize(ctx, spec.params.model_validate(params), result, ref)
    return render_experiment(result, ctx.results_root, ctx.profile, ctx.run_id)


def run_and_finish(
    name: str,
    ctx: AnalysisContext,
    params: BaseModel,
    fits: dict[str, dict] | None = None,
    reference: dict[str, pd.DataFrame | float] | None = None,
) -> AnalysisResult:
    """Both steps in one call (scripts, tests): what the DAG does for one analysis."""
    result = run_analysis(name, ctx, params, fits)
    return finish_analysis(name, ctx, params, result, reference)

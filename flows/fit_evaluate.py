"""The fit-and-evaluate flow: Table 1 alone (LSE, NSE-1, NSE-2 fitted on the cached training
split, IoU on the evaluation split, Tables 1 and 6, Fig 3) over stores the cache flow built."""

from __future__ import annotations

from prefect import flow

from flows.analyses import analysis_stage, current_run_id
from flows.runner import dask_cluster, dask_runner
from lineargan.config import RunConfig
from storage.target import Target
from tasks.analyses.registry import resolve_analyses
from tasks.run_context import RunContext


@flow(name="fit-evaluate", log_prints=True)
def fit_evaluate(config: RunConfig = RunConfig()) -> dict:
    """Fit and evaluate on stores already built by the cache flow (same config)."""
    config = config.model_copy(update={"analyses": ()})  # Table 1 only
    analyses = resolve_analyses(config)
    ctx = RunContext.for_run(config, current_run_id())
    Target(ctx.results_root).ensure_writable(quick=True)
    ctx.stores()  # both stores built and finished, by the same models
    with dask_cluster(config.dask_address, config.n_workers) as address:
        return analysis_stage.with_options(task_runner=dask_runner(address))(ctx, analyses)

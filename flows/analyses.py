"""The analysis stage of the reproduce DAG, built from the registry's declared needs.

The run's Table 1 fits go first (most expensive first), each evaluation as soon as its fit
ends; every analysis that reuses them declares it (``Needs.fits``). Every selected analysis,
Table 1 included, gets two tasks: its run, which waits only for what it declares
(``Needs.fits``: Table 1's fits and their evaluations, which it reuses), and its finish
(summary + report), which also waits for the Table 1 evaluations it shows
(``Needs.reference``). An analysis that reuses another's work (``Needs.after``) waits for that
one's run. Nothing here names an analysis.
"""

from __future__ import annotations

from prefect import flow
from prefect.futures import PrefectFuture

from flows.progress import wait_with_progress
from flows.runner import device_tasks
from lineargan.config import FitConfig, Frozen
from tasks.analyses.registry import ANALYSES, TABLE1
from tasks.prefect_tasks import (
    evaluate_extractor,
    finish_analysis,
    fit_extractor,
    run_analysis,
    write_results_index,
)
from tasks.run_context import RunContext

# Relative cost of one training sample (NSE-2's 3×3 convolutions dominate, LSE is a 1×1 map).
_FIT_COST = {"NSE-2": 3, "NSE-1": 2, "LSE": 1}


def current_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.root_flow_run_id or flow_run.id or "local")


# (parameters are validated by the caller's check_run: each value is its analysis's own model)
@flow(name="analysis-stage", validate_parameters=False)
def analysis_stage(ctx: RunContext, analyses: dict[str, Frozen]) -> dict:
    """Table 1's fits and evaluations and every analysis of ``analyses`` (name -> parameters)
    over the run's cached stores, then the results index (Dask runner set by the caller)."""
    fits, evals = submit_fits(analyses[TABLE1].fits, ctx)
    finished = submit_analyses(analyses, ctx, fits, evals)
    wait_with_progress(fits.values(), "fits")
    wait_with_progress(evals.values(), "evaluations")
    results = wait_with_progress(finished, "analyses")
    for result in results:
        print(result["markdown"])
    index = write_results_index(results, ctx)
    figures = [f for r in results for f in r["figures"]]
    return {"results_root": ctx.results_root, "index": index, "figures": figures}


def submit_fits(
    configs: dict[str, FitConfig], ctx: RunContext
) -> tuple[dict[str, PrefectFuture], dict[str, PrefectFuture]]:
    """Fit every extractor of ``configs`` (by fit label) in parallel; each evaluation starts
    as soon as its fit finishes.

    Fits are submitted most expensive first: Dask starts tasks in submission order, so on two
    workers NSE-2 (the long pole) starts at once instead of waiting for a cheaper fit to end.
    Returns (fits, evaluations), each keyed by fit label in ``configs`` order.
    """
    order = sorted(configs, key=lambda k: -_FIT_COST.get(configs[k].extractor, 0))
    with device_tasks():
        fits = {k: fit_extractor.submit(configs[k], ctx) for k in order}
        evals = {k: evaluate_extractor.submit(fits[k], ctx) for k in order}
    return {k: fits[k] for k in configs}, {k: evals[k] for k in configs}


def submit_analyses(
    params: dict[str, Frozen],
    ctx: RunContext,
    fits: dict[str, PrefectFuture],
    evaluations: dict[str, PrefectFuture],
) -> list[PrefectFuture]:
    """Submit every analysis of ``params`` (name -> parameters), most expensive first (Dask
    starts ready tasks in submission order); returns the futures of their finished results
    in ``params`` order (the order of the report)."""
    finished: dict[str, PrefectFuture] = {}
    runs: dict[str, PrefectFuture] = {}
    for name in submission_order(list(params)):
        _submit(name, params, ctx, fits, evaluations, runs, finished)
    return [finished[name] for name in params]


def _submit(
    name: str,
    params: dict[str, Frozen],
    ctx: RunContext,
    fits: dict[str, PrefectFuture],
    evaluations: dict[str, PrefectFuture],
    runs: dict[str, PrefectFuture],
    finished: dict[str, PrefectFuture],
) -> None:
    """Submit one analysis after the ones it reuses (``Needs.after``), and its finishing task."""
    spec = ANALYSES[name]
    before = [runs[a] for a in spec.needs.after if a in runs]
    with device_tasks():  # the run holds a GPU slot; summarising and rendering do not
        if spec.needs.fits:  # the evaluations too: reusing them beats racing them
            run = run_analysis.submit(
                name, ctx, params[name], fits, wait_for=list(evaluations.values()) + before
            )
        else:
            run = run_analysis.submit(name, ctx, params[name], None, wait_for=before)
    runs[name] = run
    reference = {e: evaluations[e] for e in spec.needs.reference if e in evaluations}
    finished[name] = finish_analysis.submit(name, ctx, params[name], run, reference)


def submission_order(names: list[str]) -> list[str]:
    """Most expensive first (Dask starts ready tasks in submission order), every analysis
    after the ones it declares in ``Needs.after`` (a dependency that is not selected is
    ignored: the analysis then does that work itself)."""
    pending = sorted(names, key=lambda n: -ANALYSES[n].cost)
    order: list[str] = []
    while pending:
        ready = next(
            (
                n
                for n in pending
                if all(a in order or a not in names for a in ANALYSES[n].needs.after)
            ),
            None,
        )
        if ready is None:
            raise ValueError(f"the analyses {pending} wait for each other (Needs.after cycle)")
        order.append(ready)
        pending.remove(ready)
    return order

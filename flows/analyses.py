"""The analyses' part of the reproduce DAG, built from the registry's declared needs.

Every selected analysis gets two tasks: its run, which waits only for what it declares
(``Needs.fits``: Table 1's fits and their evaluations, which it reuses), and its finish
(summary + report), which also waits for the Table 1 evaluations it shows
(``Needs.reference``). An analysis that reuses another's work (``Needs.after``) waits for that
one's run. Nothing here names an analysis.
"""

from __future__ import annotations

from prefect.futures import PrefectFuture

from flows.runner import device_tasks
from lineargan.config import Frozen
from tasks.analyses.contract import AnalysisContext
from tasks.analyses.registry import ANALYSES
from tasks.prefect_tasks import finish_analysis, run_analysis


def submit_analyses(
    params: dict[str, Frozen],
    ctx: AnalysisContext,
    fits: dict[str, PrefectFuture],
    evaluations: dict[str, PrefectFuture],
) -> list[PrefectFuture]:
    """Submit every analysis of ``params`` (name -> parameters), most expensive first (Dask
    starts ready tasks in submission order); returns the futures of their finished results."""
    finished, runs = [], {}
    for name in submission_order(list(params)):
        _submit(name, params, ctx, fits, evaluations, runs, finished)
    return finished


def _submit(
    name: str,
    params: dict[str, Frozen],
    ctx: AnalysisContext,
    fits: dict[str, PrefectFuture],
    evaluations: dict[str, PrefectFuture],
    runs: dict[str, PrefectFuture],
    finished: list[PrefectFuture],
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
    finished.append(finish_analysis.submit(name, ctx, params[name], run, reference))


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

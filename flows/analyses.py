"""The analyses' part of the reproduce DAG, built from the registry's declared needs.

Every selected analysis gets two tasks: its run, which waits only for what it declares
(``Needs.fits``: Table 1's fits and their evaluations, which it reuses), and its finish
(summary + report), which also waits for the Table 1 evaluations it shows
(``Needs.reference``). Nothing here names an analysis.
"""

from __future__ import annotations

from prefect.futures import PrefectFuture

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
    finished = []
    for name in sorted(params, key=lambda n: -ANALYSES[n].cost):
        spec = ANALYSES[name]
        if spec.needs.fits:  # the evaluations too: reusing them beats racing them
            run = run_analysis.submit(
                name, ctx, params[name], fits, wait_for=list(evaluations.values())
            )
        else:
            run = run_analysis.submit(name, ctx, params[name], None)
        reference = {e: evaluations[e] for e in spec.needs.reference if e in evaluations}
        finished.append(finish_analysis.submit(name, ctx, params[name], run, reference))
    return finished

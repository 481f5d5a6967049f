"""Table 2: few-shot LSEs (science shared with SCS/SIE: :mod:`lineargan.analyses.fewshot`)."""

from lineargan.analyses.fewshot import FewShotParams
from tasks.analyses.contract import AnalysisSpec, Needs, PaperTable
from tasks.analyses.fewshot import render, step

SPEC = AnalysisSpec(
    name="fewshot",
    params=FewShotParams,
    defaults=FewShotParams.for_run,
    compute=step.compute,
    summarize=step.summarize,
    tables=step.TABLES,
    renderers={
        "table2": PaperTable(
            "Table 2 — few-shot LSE, mean ± max deviation and ratio to the full LSE",
            render.render_table2,
        )
    },
    needs=Needs(reference=("LSE", "LSE:converged")),
    cost=3,
)

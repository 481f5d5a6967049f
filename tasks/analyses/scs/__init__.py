"""Table 3: Semantic-Conditional Sampling (science shared with ``lineargan-edit``:
:mod:`lineargan.analyses.scs`)."""

from lineargan.analyses.scs import SCSParams
from tasks.analyses.contract import AnalysisSpec, Needs, PaperTable
from tasks.analyses.scs import render, step
from tasks.analyses.semantic_predictors import REUSED

SPEC = AnalysisSpec(
    name="scs",
    params=SCSParams,
    defaults=SCSParams.for_run,
    compute=step.compute,
    tables=step.TABLES,
    renderers={
        "table3": PaperTable(
            "Table 3 — SCS semantic agreement with the targets (%), few-shot LSEs vs the baseline",
            render.render_table3,
        )
    },
    needs=Needs(generator=True, segmenter=True, after=REUSED),
    cost=3,
)

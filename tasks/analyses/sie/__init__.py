"""Sec 4.1 / Fig 5: Semantic Image Editing (science shared with ``lineargan-edit``:
:mod:`lineargan.analyses.sie`)."""

from lineargan.analyses.sie import SIEParams
from tasks.analyses.contract import AnalysisSpec, Needs, PaperTable
from tasks.analyses.semantic_predictors import REUSED
from tasks.analyses.sie import render, step

SPEC = AnalysisSpec(
    name="sie",
    params=SIEParams,
    defaults=SIEParams.for_run,
    compute=step.compute,
    tables=step.TABLES,
    renderers={
        "fig5": PaperTable(
            "Fig 5 / Sec 4.1 — SIE vs colour-space editing, per edit operation",
            render.render_sie,
        )
    },
    needs=Needs(fits=True, generator=True, segmenter=True, after=(*REUSED, "scs")),
    cost=2,
)

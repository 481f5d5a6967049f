"""Appx E, Tables 4 and 5: train on all classes, keep the ones some extractor finds, retrain."""

from tasks.analyses.category_selection import render, step
from tasks.analyses.category_selection.science import CategorySelectionParams
from tasks.analyses.contract import AnalysisSpec, Needs, PaperTable

SPEC = AnalysisSpec(
    name="category_selection",
    params=CategorySelectionParams,
    # round 1 must be Table 1's fits (same schedule and seed), to reuse them
    defaults=CategorySelectionParams.for_run,
    compute=step.compute,
    tables=step.TABLES,
    renderers={
        "table4": PaperTable(
            "Tables 4 & 5 — category selection (Appx E), both rounds", render.render_table4
        )
    },
    needs=Needs(fits=True),
    cost=2,
)

"""Sec 3.3 / Fig 4: segmentation by the nearest class center on the n-sphere."""

from tasks.analyses.class_centers import render, step
from tasks.analyses.class_centers.science import ClassCentersParams
from tasks.analyses.contract import AnalysisSpec, Needs, PaperTable

SPEC = AnalysisSpec(
    name="class_centers",
    params=ClassCentersParams,
    defaults=ClassCentersParams.for_run,
    compute=step.compute,
    summarize=step.summarize,
    tables=step.TABLES,
    renderers={
        "fig4": PaperTable(
            "Fig 4 / Sec 3.3 — nearest class-center segmentation, per-class IoU (%)",
            render.render_fig4,
        )
    },
    needs=Needs(reference=("LSE",)),
)

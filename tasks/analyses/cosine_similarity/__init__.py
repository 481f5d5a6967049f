"""Appx F / Fig 9: cosine similarity between the feature pools of the classes."""

from tasks.analyses.contract import AnalysisSpec, PaperTable
from tasks.analyses.cosine_similarity import render, step
from tasks.analyses.cosine_similarity.science import CosineSimilarityParams

SPEC = AnalysisSpec(
    name="cosine_similarity",
    params=CosineSimilarityParams,
    defaults=CosineSimilarityParams.for_run,
    compute=step.compute,
    tables=step.TABLES,
    renderers={
        "fig9": PaperTable(
            "Fig 9 / Appx F — cosine similarity between class feature pools",
            render.render_fig9,
        )
    },
)

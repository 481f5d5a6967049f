"""Appx F / Fig 9: cosine similarity between the feature pools of the classes."""

from tasks.analyses.contract import AnalysisSpec, PaperTable
from tasks.analyses.cosine_similarity import render, step
from tasks.analyses.cosine_similarity.science import CosineSimilarityParams

SPEC = AnalysisSpec(
    name="cosine_similarity",
    params=CosineSimilarityParams,
    defaults=lambda config, after: CosineSimilarityParams.for_profile(config.profile),
    compute=step.compute,
    tables=step.TABLES,
    renderers={
        "fig9": PaperTable(
            "Fig 9 / Appx F — cosine similarity between class feature pools",
            render.render_fig9,
        )
    },
)

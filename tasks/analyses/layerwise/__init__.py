"""Appx I: what each generator layer alone segments (an LSE trained with Eq. 8)."""

from tasks.analyses.contract import AnalysisSpec, PaperTable
from tasks.analyses.layerwise import render, step
from tasks.analyses.layerwise.science import LayerwiseParams

SPEC = AnalysisSpec(
    name="layerwise",
    params=LayerwiseParams,
    defaults=LayerwiseParams.for_run,
    compute=step.compute,
    tables=step.TABLES,
    renderers={
        "layerwise": PaperTable(
            "Appx I — layer-wise mIoU of an LSE trained with per-layer losses",
            render.render_layerwise,
        )
    },
    cost=2,
)

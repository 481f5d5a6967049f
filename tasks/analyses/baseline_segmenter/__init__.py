"""The baseline UNet SCS and SIE use, scored against the reference segmenter (its science,
the UNet and its parameters, is :mod:`lineargan.baseline`)."""

from lineargan.baseline import UNetParams
from tasks.analyses.baseline_segmenter import render, step
from tasks.analyses.contract import AnalysisSpec, PaperTable

SPEC = AnalysisSpec(
    name="baseline_segmenter",
    params=UNetParams,
    defaults=UNetParams.for_run,
    compute=step.compute,
    tables=step.TABLES,
    renderers={
        "baseline": PaperTable(
            "Baseline segmenter — the SCS/SIE UNet vs the reference segmenter, IoU (%)",
            render.render_baseline_segmenter,
        )
    },
    cost=4,  # first: SCS and SIE wait for it, and it trains while Table 1 does
)

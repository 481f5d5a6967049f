"""SeFa (Shen & Zhou, CVPR 2021): closed-form latent directions, named by what the LSE sees."""

from tasks.analyses.contract import AnalysisSpec, Needs, PaperTable
from tasks.analyses.sefa import render, step
from tasks.analyses.sefa.science import SefaParams

SPEC = AnalysisSpec(
    name="sefa",
    params=SefaParams,
    defaults=SefaParams.for_run,
    compute=step.compute,
    tables=step.TABLES,
    renderers={
        "sefa": PaperTable(
            "SeFa — closed-form latent directions measured by the LSE",
            render.render_sefa,
        )
    },
    needs=Needs(fits=True, generator=True, segmenter=True),
)

"""Fig 8 (Appx D): the mIoU of every extractor during its training, from Table 1's snapshots."""

from tasks.analyses.contract import AnalysisSpec, Needs, PaperTable
from tasks.analyses.training_curves import render, step
from tasks.analyses.training_curves.science import TrainingCurvesParams

SPEC = AnalysisSpec(
    name="training_curves",
    params=TrainingCurvesParams,
    # Table 1's fits of the run (both row kinds), so it scores their snapshots, trains nothing
    defaults=TrainingCurvesParams.for_run,
    compute=step.compute,
    tables=step.TABLES,
    renderers={
        "fig8": PaperTable(
            "Fig 8 — mIoU of every extractor during training", render.render_training_curves
        )
    },
    needs=Needs(fits=True),
)

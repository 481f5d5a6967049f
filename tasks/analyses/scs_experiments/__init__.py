"""The experiments that explain the default's Table 3 (issue #26): matched baselines,
candidate choice vs latent optimisation, both protocols, with paired bootstrap intervals.
Off unless named in ``--analyses`` (80 min on 2 shared CPU cores at the quick profile)."""

from tasks.analyses.contract import AnalysisSpec, Needs, PaperTable
from tasks.analyses.scs_experiments import render, science, step
from tasks.analyses.semantic_predictors import REUSED

SPEC = AnalysisSpec(
    name="scs_experiments",
    params=science.SCSExperimentParams,
    defaults=science.SCSExperimentParams.for_run,
    compute=step.compute,
    tables=step.TABLES,
    renderers={
        "scs_experiments": PaperTable(
            "Table 3's explanation — SCS with matched baselines, candidate choice vs "
            "optimisation, both protocols (Eq. 7 %, 95 % intervals)",
            render.render_experiments,
        )
    },
    needs=Needs(generator=True, segmenter=True, after=REUSED),
    cost=3,
    optional=True,
)

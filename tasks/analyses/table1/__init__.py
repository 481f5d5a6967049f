"""Table 1 (Sec 3.2, Appx D): mIoU of LSE, NSE-1 and NSE-2 against the segmenter, Table 6's
per-class IoU, and Fig 3's comparison of their predictions."""

from tasks.analyses.contract import AnalysisSpec, Needs, PaperTable
from tasks.analyses.table1 import render, step
from tasks.analyses.table1.science import Table1Params

SPEC = AnalysisSpec(
    name="table1",
    params=Table1Params,
    defaults=Table1Params.for_run,
    compute=step.compute,
    tables=step.TABLES,
    reads=step.READS,
    renderers={
        "table1": PaperTable(
            "Table 1 — mIoU (%) of LSE / NSE-1 / NSE-2, bracket: relative to the best",
            render.render_table1,
        ),
        "table6": PaperTable("Table 6 — per-class IoU (%) of each extractor", render.render_table6),
    },
    needs=Needs(fits=True),
    cost=0,
)

"""Paper tables and reports: every paper table by name, and an experiment's report rendered
from the table parts it wrote.

A paper table belongs to an experiment (``table1`` for Tables 1 and 6, or a registered
analysis) and renders that experiment's tables. A run renders them from the parts it just
wrote (:func:`render_experiment`); ``lineargan render`` (:func:`tasks.render.render`) renders
them later from the parts the results index names, so both print the same numbers in the
same layout.
"""

from __future__ import annotations

import pandas as pd

from lineargan import render as renderers
from storage.layout import report_target
from storage.tables import read_table_url
from tasks.analyses.contract import AnalysisResult, PaperTable
from tasks.analyses.registry import ANALYSES

TABLE1 = "table1"
CORE: dict[str, PaperTable] = {
    "table1": PaperTable(
        "Table 1 — mIoU (%) of LSE / NSE-1 / NSE-2, bracket: relative to the best",
        renderers.render_table1,
    ),
    "table6": PaperTable("Table 6 — per-class IoU (%) of each extractor", renderers.render_table6),
}


def paper_tables() -> dict[str, tuple[str, PaperTable]]:
    """Every paper table: name -> (experiment that writes its tables, renderer)."""
    out = {name: (TABLE1, table) for name, table in CORE.items()}
    for spec in ANALYSES.values():
        out.update({name: (spec.name, table) for name, table in spec.renderers.items()})
    return out


def experiment_tables(experiment: str, tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Restrict shared tables to one run: Table 6 reads only the per-class rows of the fits
    and the evaluation store of that run's Table 1."""
    if experiment != TABLE1 or "iou_per_class" not in tables:
        return tables
    t1, iou = tables["table1"], tables["iou_per_class"]
    mine = iou.set_index(["fit_key", "eval_digest"]).index.isin(
        t1.set_index(["fit_key", "eval_digest"]).index
    )
    return {**tables, "iou_per_class": iou[mine].drop_duplicates(["fit_key", "class_index"])}


def section(title: str, profile: str, run_id: str, body: str) -> str:
    return f"## {title}\n\n(profile `{profile}`, run `{run_id}`)\n\n{body.strip()}\n"


def render_experiment(
    result: AnalysisResult, results_root: str, profile: str, run_id: str
) -> AnalysisResult:
    """Render every paper table of ``result`` from the parts it wrote, write each report
    (keyed like the figures, so an overridden run never replaces the defaults' report) and
    set ``result.markdown`` / ``result.reports``."""
    tables = experiment_tables(
        result.name, {name: read_table_url(url) for name, url in result.tables.items()}
    )
    sections, reports = [], []
    for name, (experiment, table) in paper_tables().items():
        if experiment != result.name:
            continue
        md = section(table.title, profile, run_id, table.render(tables))
        target = report_target(results_root, f"{name}-{profile}-{result.key[:8]}")
        target.write_bytes_atomic(md.encode())
        sections.append(md)
        reports.append(target.url)
    figures = "".join(f"\nFigure: `{url}`\n" for url in result.figures)
    result.markdown = "\n".join(sections) + figures
    result.reports = reports
    return result

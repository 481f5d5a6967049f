"""Paper tables and reports: every paper table by name, and an experiment's report rendered
from the table parts it wrote.

A paper table belongs to a registered analysis (``table1`` for Tables 1 and 6) and renders
that analysis's tables. A run renders them from the parts it just
wrote (:func:`render_experiment`); ``lineargan render`` (:func:`tasks.render.render`) renders
them later from the parts the results index names, so both print the same numbers in the
same layout.
"""

from __future__ import annotations

from storage.layout import report_target
from storage.tables import read_table_url
from tasks.analyses.contract import AnalysisResult, PaperTable
from tasks.analyses.registry import ANALYSES


def paper_tables() -> dict[str, tuple[str, PaperTable]]:
    """Every paper table: name -> (analysis that writes its tables, renderer)."""
    return {
        name: (spec.name, table)
        for spec in ANALYSES.values()
        for name, table in spec.renderers.items()
    }


def section(title: str, profile: str, run_id: str, body: str) -> str:
    return f"## {title}\n\n(profile `{profile}`, run `{run_id}`)\n\n{body.strip()}\n"


def render_experiment(
    result: AnalysisResult, results_root: str, profile: str, run_id: str
) -> AnalysisResult:
    """Render every paper table of ``result`` from the parts it wrote, write each report
    (keyed like the figures, so an overridden run never replaces the defaults' report) and
    set ``result.markdown`` / ``result.reports``."""
    tables = {name: read_table_url(url) for name, url in result.tables.items()}
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

"""``lineargan render``: a paper table of the newest run, from its Parquet files alone, by the
same renderer the run's report used (:mod:`tasks.analyses.report`)."""

from __future__ import annotations

from lineargan.errors import LinearGanError
from lineargan.paths import default_results_root
from storage.results import latest_index, run_tables
from tasks.analyses.report import paper_tables, section

__all__ = ["paper_tables", "render"]


def render(name: str, results_root: str | None = None, profile: str | None = None) -> str:
    """Paper table ``name`` of the newest run (of ``profile``), from its Parquet files alone."""
    tables = paper_tables()
    if name not in tables:
        raise LinearGanError(f"unknown paper table {name!r}", f"use one of: {', '.join(tables)}")
    experiment, table = tables[name]
    index = latest_index(results_root or default_results_root(), profile)
    data = run_tables(index, experiment)
    return section(
        table.title, index["profile"].iloc[0], index["run_id"].iloc[0], table.render(data)
    )

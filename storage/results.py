"""Query API: load any result table as a DataFrame, and find the files a run wrote.

    from storage.results import load_table
    load_table("fewshot_summary")            # every run, every profile

A run's ``results_index`` part names the exact table part (file) each experiment wrote, so a
paper table can be rendered from those files alone (``tasks.render.render``), whichever run
first computed them (reused analyses keep their original files).
"""

from __future__ import annotations

import pandas as pd

from lineargan.errors import LinearGanError
from lineargan.paths import default_results_root
from storage.tables import TableNotFoundError, read_table, read_table_url


def load_table(name: str, results_root: str | None = None) -> pd.DataFrame:
    """Any result table (all runs); schemas in ``storage/tables.py`` and the job modules."""
    return read_table(results_root or default_results_root(), name)


def latest_index(results_root: str | None = None, profile: str | None = None) -> pd.DataFrame:
    """The ``results_index`` rows of the newest reproduce run (of ``profile`` if given)."""
    root = results_root or default_results_root()
    try:
        index = load_table("results_index", root)
    except TableNotFoundError:  # not "use one of" the tables: a paper table needs a whole run
        raise LinearGanError(
            f"no reproduce run has finished under {root} (it has no results_index)",
            "run the reproduce flow first (bash scripts/run.sh or python -m flows.reproduce), "
            "or pass the results root it wrote to",
        ) from None
    if profile:
        index = index[index["profile"] == profile]
    if index.empty:
        raise LinearGanError(
            f"no reproduce run{f' of profile {profile!r}' if profile else ''} in the results index",
            "run the reproduce flow first (bash scripts/run.sh or python -m flows.reproduce)",
        )
    newest = index.sort_values("created_at").iloc[-1]["run_id"]
    return index[index["run_id"] == newest]


def run_tables(index: pd.DataFrame, experiment: str) -> dict[str, pd.DataFrame]:
    """Every table ``experiment`` wrote for the run described by ``index``, by table name."""
    rows = index[(index["experiment"] == experiment) & (index["kind"] == "table")]
    if rows.empty:
        raise LinearGanError(
            f"the run {index['run_id'].iloc[0]} has no tables from {experiment!r}",
            "rerun reproduce with that analysis enabled (RunConfig.analyses)",
        )
    return {r.name: read_table_url(r.path) for r in rows.itertuples(index=False)}

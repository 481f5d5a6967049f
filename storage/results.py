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
from storage.tables import TableNotFoundError, read_table, read_table_url, table_names


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


# Columns that say when, where and by which code a row was made, not what was measured: two runs
# of the same configuration differ in them and nothing else. The analysis key (a hash of the
# analysis's parameters) is one too: a new parameter field with the old behaviour changes it
# and no number.
BOOKKEEPING = frozenset(
    {
        "run_id",
        "code_version",
        "created_at",
        "train_seconds",
        "seconds",
        "fit_dir",
        "path",
        "key",
        "analysis_key",
    }
)


def compare_results(root_a: str, root_b: str) -> dict[str, str]:
    """Each table of ``root_a`` compared cell by cell with the same table of ``root_b``: "same",
    "missing", or what differs. Bookkeeping columns (:data:`BOOKKEEPING`) and the
    ``results_index`` are left out, and rows are compared in a canonical order, so two runs of
    one configuration compare "same" exactly when every number they measured is identical (the
    check that a change kept the quick run's numbers)."""
    out: dict[str, str] = {}
    in_b = set(table_names(root_b))
    for name in table_names(root_a):
        if name == "results_index":
            continue
        if name not in in_b:
            out[name] = "missing"
            continue
        a, b = read_table(root_a, name), read_table(root_b, name)
        cols = [c for c in a.columns if c not in BOOKKEEPING]
        if lost := sorted(set(cols) - set(b.columns)):
            out[name] = f"columns missing: {', '.join(lost)}"
            continue
        try:
            pd.testing.assert_frame_equal(
                _canonical(a, cols), _canonical(b, cols), check_exact=True
            )
        except AssertionError as exc:
            out[name] = " ".join(str(exc).split())[:300]
        else:
            out[name] = "same"
    return out


def _hashable(value: object) -> object:
    """List cells (latents, sample indices) as tuples, so rows sort and compare."""
    if isinstance(value, str) or not hasattr(value, "__len__"):
        return value
    return tuple(pd.array(value).tolist())


def _canonical(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    frame = frame[cols].map(_hashable)
    return frame.sort_values(cols, kind="stable").reset_index(drop=True)

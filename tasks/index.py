"""The results index: one table listing every result file of a run, and the combined report.

``results_index`` schema: experiment, key (configuration hash of that experiment), kind
("table" | "figure" | "report" | "fit" | "manifest"), name, path, + profile, run_id, code_version, created_at.
``pd.read_parquet(<results_root>/tables/results_index)`` answers "which file holds what, made
by which run and configuration".
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from storage.layout import manifest_target, report_target
from storage.tables import run_metadata, schema, write_table_part
from tasks.analyses.contract import AnalysisResult

INDEX_TABLE = "results_index"
INDEX_SCHEMA = schema(
    experiment=pa.string(), key=pa.string(), kind=pa.string(), name=pa.string(), path=pa.string()
)


def index_rows(results: list[AnalysisResult], results_root: str) -> list[dict]:
    """One row per file (or checkpoint directory) each experiment of the run wrote or reused."""
    rows = []
    for r in results:
        manifest = manifest_target(results_root, f"{r.name}-{r.key}")
        files = (
            [("table", name, path) for name, path in r.tables.items()]
            + [("figure", path.rsplit("/", 1)[-1], path) for path in r.figures]
            + [("report", path.rsplit("/", 1)[-1], path) for path in r.reports]
            + [("fit", path.rsplit("/", 1)[-1], path) for path in r.fits]
            + ([("manifest", manifest.path.rsplit("/", 1)[-1], manifest.url)] * manifest.exists())
        )
        rows += [
            {"experiment": r.name, "key": r.key, "kind": kind, "name": name, "path": path}
            for kind, name, path in files
        ]
    return rows


def write_index_and_report(
    results: list[AnalysisResult], results_root: str, profile: str, run_id: str
) -> tuple[str, str]:
    """Write the combined paper report and the index of every file this run produced;
    returns (index part URL, combined markdown)."""
    combined = (
        f"# Linear Semantics in GANs — reproduction (profile `{profile}`, run `{run_id}`)\n\n"
    )
    combined += "\n\n".join(r.markdown.strip() for r in results if r.markdown) + "\n"
    report = report_target(results_root, f"paper-{profile}-{run_id[:8]}")
    report.write_bytes_atomic(combined.encode())
    rows = index_rows(results, results_root)
    rows.append(
        {
            "experiment": "paper",
            "key": run_id,
            "kind": "report",
            "name": report.url.rsplit("/", 1)[-1],
            "path": report.url,
        }
    )
    df = pd.DataFrame(rows)
    for col, val in run_metadata(profile, run_id).items():
        df[col] = val
    return write_table_part(results_root, INDEX_TABLE, run_id, df, INDEX_SCHEMA), combined

"""The results index: one table listing every result file of a run, and the combined report.

``results_index`` schema: experiment, key (configuration hash of that experiment), kind
("table" | "figure" | "report"), name, path, + profile, run_id, code_version, created_at.
``pd.read_parquet(<results_root>/tables/results_index)`` answers "which file holds what, made
by which run and configuration".
"""

from __future__ import annotations

import pandas as pd

from lineargan.jobs.analysis import AnalysisResult
from lineargan.render import per_class_markdown
from storage.layout import report_target
from storage.tables import run_metadata, write_table_part

INDEX_TABLE = "results_index"


def index_rows(results: list[AnalysisResult], results_root: str, profile: str) -> list[dict]:
    rows = []
    for r in results:
        for name, path in r.tables.items():
            rows.append(
                {"experiment": r.name, "key": r.key, "kind": "table", "name": name, "path": path}
            )
        for path in r.figures:
            rows.append(
                {
                    "experiment": r.name,
                    "key": r.key,
                    "kind": "figure",
                    "name": path.rsplit("/", 1)[-1],
                    "path": path,
                }
            )
        report = report_target(results_root, f"{r.name}-{profile}")
        if report.exists():
            rows.append(
                {
                    "experiment": r.name,
                    "key": r.key,
                    "kind": "report",
                    "name": f"{r.name}-{profile}.md",
                    "path": report.url,
                }
            )
    return rows


def write_index_and_report(
    results: list[AnalysisResult], iou: pd.DataFrame, results_root: str, profile: str, run_id: str
) -> tuple[str, str]:
    """Write Table 6 (per-class IoU, from the long table), the combined paper report and the
    index of every file this run produced; returns (index part URL, combined markdown)."""
    table6 = (
        f"## Table 6 — per-class IoU (%) of each extractor (profile `{profile}`)\n\n"
        + per_class_markdown(iou)
        + "\n"
    )
    report_target(results_root, f"table6-{profile}").write_bytes_atomic(table6.encode())
    sections = [r.markdown for r in results] + [table6]
    combined = (
        f"# Linear Semantics in GANs — reproduction (profile `{profile}`, run `{run_id}`)\n\n"
    )
    combined += "\n\n".join(s.strip() for s in sections if s) + "\n"
    report = report_target(results_root, f"paper-{profile}")
    report.write_bytes_atomic(combined.encode())
    rows = index_rows(results, results_root, profile)
    rows.append(
        {
            "experiment": "table6",
            "key": "",
            "kind": "report",
            "name": f"table6-{profile}.md",
            "path": report_target(results_root, f"table6-{profile}").url,
        }
    )
    rows.append(
        {
            "experiment": "paper",
            "key": "",
            "kind": "report",
            "name": f"paper-{profile}.md",
            "path": report.url,
        }
    )
    df = pd.DataFrame(rows)
    for col, val in run_metadata(profile, run_id).items():
        df[col] = val
    return write_table_part(results_root, INDEX_TABLE, run_id, df), combined

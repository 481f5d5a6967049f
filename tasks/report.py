"""Report tasks: Table 1 Parquet + markdown artifact, Fig 3 PNG, the results index."""

from __future__ import annotations

import base64

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lineargan.jobs import index as index_jobs
from lineargan.jobs import report as jobs
from lineargan.jobs.analysis import AnalysisResult
from storage.target import Target

TABLE1_ARTIFACT_COLUMNS = [
    "generator",
    "segmenter",
    "extractor",
    "miou",
    "rel_diff",
    "n_train",
    "n_eval",
    "iterations",
]


@task(name="write-table1")
def write_table1(results_root, fit_metas, iou_frames, train_url, eval_url, profile, run_id) -> dict:
    summary, result = jobs.write_table1(
        results_root, fit_metas, iou_frames, train_url, eval_url, profile, run_id
    )
    create_markdown_artifact(
        key=f"table1-{profile}", markdown=result.markdown, description="Table 1 (mIoU)"
    )
    create_table_artifact(
        key=f"table1-rows-{profile}",
        table=summary[TABLE1_ARTIFACT_COLUMNS].round(4).to_dict(orient="records"),
    )
    return result.to_dict()


@task(name="render-figure3")
def render_figure3(results_root, eval_url, fit_metas, n_samples, profile, device="auto") -> str:
    url = jobs.render_figure3(
        results_root, eval_url, fit_metas, n_samples, f"fig3-{profile}", device
    )
    create_markdown_artifact(
        key=f"fig3-{profile}",
        markdown=png_markdown("Fig 3 — image, segmenter label, extractor predictions", url),
    )
    return url


def png_markdown(title: str, url: str) -> str:
    """A markdown artifact body that shows a PNG inline (data URI) and names its file."""
    png = base64.b64encode(Target(url).read_bytes()).decode()
    return f"## {title}\n\n![{title}](data:image/png;base64,{png})\n\nFile: `{url}`"


@task(name="write-results-index")
def write_results_index(
    results: list[dict],
    iou_frames: list[pd.DataFrame],
    results_root: str,
    profile: str,
    run_id: str,
) -> str:
    """Table 6, the combined report (one artifact) and the index of every file of this run."""
    parsed = [AnalysisResult(**r) for r in results]
    part, combined = index_jobs.write_index_and_report(
        parsed, pd.concat(iou_frames, ignore_index=True), results_root, profile, run_id
    )
    create_markdown_artifact(
        key=f"paper-tables-{profile}", markdown=combined, description="All paper tables of this run"
    )
    for r in parsed:
        for url in r.figures:
            stem = url.rsplit("/", 1)[-1].removesuffix(".png").lower().replace("_", "-")
            create_markdown_artifact(key=f"figure-{stem}"[:100], markdown=png_markdown(stem, url))
    return part

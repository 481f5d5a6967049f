"""Report tasks: Table 1 Parquet + markdown artifact, Fig 3 PNG."""

from __future__ import annotations

import base64

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lineargan.jobs import report as jobs
from storage.target import Target


@task(name="write-table1")
def write_table1(results_root, fit_metas, iou_frames, train_url, eval_url, profile, run_id) -> str:
    summary, markdown = jobs.write_table1(
        results_root, fit_metas, iou_frames, train_url, eval_url, profile, run_id
    )
    create_markdown_artifact(
        key=f"table1-{profile}", markdown=markdown, description="Table 1 (mIoU)"
    )
    cols = [
        "generator",
        "segmenter",
        "extractor",
        "miou",
        "rel_diff",
        "n_train",
        "n_eval",
        "iterations",
    ]
    create_table_artifact(
        key=f"table1-rows-{profile}", table=summary[cols].round(4).to_dict(orient="records")
    )
    return markdown


@task(name="render-figure3")
def render_figure3(results_root, eval_url, fit_metas, n_samples, profile, device="auto") -> str:
    url = jobs.render_figure3(
        results_root, eval_url, fit_metas, n_samples, f"fig3-{profile}", device
    )
    png = base64.b64encode(Target(url).read_bytes()).decode()
    create_markdown_artifact(
        key=f"fig3-{profile}",
        markdown=f"## Fig 3 — image, segmenter label, extractor predictions\n\n"
        f"![fig3](data:image/png;base64,{png})\n\nFile: `{url}`",
    )
    return url

"""Thin Prefect tasks over the plain pipeline steps of :mod:`tasks`.

Each resolves its references, calls one plain function, publishes artifacts (markdown tables,
figures) to the Prefect UI and returns a small reference (URLs, metadata dicts): arrays move
between steps only through :mod:`storage`. Nothing here computes anything itself.
"""

from __future__ import annotations

import base64

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lineargan.config import DatasetConfig, FitConfig, fit_label
from storage.target import Target
from tasks import cache as cache_steps
from tasks import evaluate as eval_steps
from tasks import fit as fit_steps
from tasks import index as index_steps
from tasks import table1 as table1_steps
from tasks.analyses import runner
from tasks.analyses.contract import AnalysisContext, AnalysisResult

# -- cache ------------------------------------------------------------------------------------


@task(name="size-stores")
def size_stores(datasets: list[DatasetConfig], data_root: str) -> int:
    """Print each store's size; refuse the run over its budget before anything is written."""
    return cache_steps.size_stores(datasets, data_root)


@task(name="prepare-store", task_run_name="prepare-{cfg.split}-n{cfg.n}")
def prepare_store(cfg: DatasetConfig, data_root: str) -> tuple[str, list[int], int]:
    """Create or reopen the dataset's store; returns (URL, chunks still to compute, all chunks)."""
    return cache_steps.prepare_store(cfg, data_root)


@task(name="cache-chunk", task_run_name="chunk-{index}", retries=1, retry_delay_seconds=2)
def cache_chunk(store_url: str, index: int, device: str = "auto") -> bool:
    """Generate + label + write one chunk (skipped when already done); True if computed."""
    return cache_steps.fill_chunk(store_url, index, device)


@task(name="finalize-store")
def finalize_store(store_url: str) -> dict:
    """Mark the store complete once every chunk is done."""
    return cache_steps.finalize_store(store_url)


# -- Table 1 ----------------------------------------------------------------------------------


@task(name="fit-extractor", task_run_name="fit-{cfg.extractor}")
def fit_extractor(train_url: str, cfg: FitConfig, results_root: str, device: str = "auto") -> dict:
    """Train (or reuse) one extractor; logs iteration and loss every ~10% of the fit."""
    logger = get_run_logger()
    logged = [-1]  # last decile logged
    label = fit_label(cfg.extractor, cfg.method)

    def progress(it: int, total: int, loss: float) -> None:
        decile = 10 * it // total
        if decile > logged[0]:
            logged[0] = decile
            logger.info("%s: iteration %d/%d, loss %.4f", label, it, total, loss)

    meta = fit_steps.fit_extractor(train_url, cfg, results_root, device, progress=progress)
    logger.info(
        "%s %s (%s)%s",
        label,
        "reused" if meta["reused"] else "trained",
        meta["fit_dir"],
        stopping_note(meta),
    )
    return meta


def stopping_note(meta: dict) -> str:
    """How a converged fit stopped, for the log ("" for a scheduled fit)."""
    if "converged" not in meta:
        return ""
    how = f"; converged={meta['converged']} after {meta['iterations']} iterations"
    if meta.get("grad_norm") is not None:
        return how + (
            f" (L-BFGS certificate: |grad|_inf={meta['grad_norm']:.2e}, relative loss change "
            f"{meta['rel_change']:.2e})"
        )
    return how + f" (held-out loss plateau at {meta['heldout_loss']:.5f})"


@task(name="evaluate-extractor", task_run_name="evaluate-{fit_meta[fit_label]}")
def evaluate_extractor(
    fit_meta: dict,
    eval_url: str,
    results_root: str,
    profile: str,
    run_id: str,
    device: str = "auto",
) -> pd.DataFrame:
    """Per-class IoU of one fit on the evaluation store (a DataFrame of a few rows)."""
    return eval_steps.evaluate_fit(fit_meta, eval_url, results_root, profile, run_id, device)["all"]


TABLE1_ARTIFACT_COLUMNS = [
    "extractor",
    "method",
    "miou",
    "rel_diff",
    "n_train",
    "n_eval",
    "iterations",
]


@task(name="write-table1")
def write_table1(results_root, fit_metas, iou_frames, train_url, eval_url, profile, run_id) -> dict:
    summary, result = table1_steps.write_table1(
        results_root, fit_metas, iou_frames, train_url, eval_url, profile, run_id
    )
    create_markdown_artifact(
        key=f"table1-{profile}", markdown=result.markdown, description="Tables 1 and 6"
    )
    create_table_artifact(
        key=f"table1-rows-{profile}",
        table=summary[TABLE1_ARTIFACT_COLUMNS].round(4).to_dict(orient="records"),
    )
    return result.to_dict()


@task(name="render-figure3")
def render_figure3(results_root, eval_url, fit_metas, n_samples, profile, device="auto") -> list:
    urls = table1_steps.render_figure3(
        results_root, eval_url, fit_metas, n_samples, f"fig3-{profile}", device
    )
    publish_figures(urls)
    return urls


# -- analyses -------------------------------------------------------------------------------------


@task(name="run-analysis", task_run_name="{name}")
def run_analysis(name: str, ctx: AnalysisContext, params, fits: dict | None = None) -> dict:
    """The work of one registered analysis (reused when finished with the same key)."""
    result = runner.run_analysis(name, ctx, params, fits)
    get_run_logger().info("%s %s (key %s)", name, "reused" if result.reused else "done", result.key)
    return result.to_dict()


@task(name="finish-analysis", task_run_name="{name}-report")
def finish_analysis(
    name: str, ctx: AnalysisContext, params, result: dict, reference: dict | None = None
) -> dict:
    """Summary with Table 1's reference numbers, the rendered report and its artifacts."""
    done = runner.finish_analysis(name, ctx, params, AnalysisResult(**result), reference)
    create_markdown_artifact(key=f"{name}-{ctx.profile}".replace("_", "-"), markdown=done.markdown)
    publish_figures(done.figures)
    return done.to_dict()


# -- index ----------------------------------------------------------------------------------------


@task(name="write-results-index")
def write_results_index(results: list[dict], results_root: str, profile: str, run_id: str) -> str:
    """The combined report (one artifact) and the index of every file of this run."""
    parsed = [AnalysisResult(**r) for r in results]
    part, combined = index_steps.write_index_and_report(parsed, results_root, profile, run_id)
    create_markdown_artifact(
        key=f"paper-tables-{profile}", markdown=combined, description="All paper tables of this run"
    )
    return part


def png_markdown(title: str, url: str) -> str:
    """A markdown artifact body that shows a PNG inline (data URI) and names its file."""
    png = base64.b64encode(Target(url).read_bytes()).decode()
    return f"## {title}\n\n![{title}](data:image/png;base64,{png})\n\nFile: `{url}`"


def publish_figures(urls: list[str]) -> None:
    """One markdown artifact per PNG figure (the PDF beside it is listed in the index)."""
    for url in urls:
        if url.endswith(".png"):
            stem = url.rsplit("/", 1)[-1].removesuffix(".png").lower().replace("_", "-")
            create_markdown_artifact(key=f"figure-{stem}"[:100], markdown=png_markdown(stem, url))

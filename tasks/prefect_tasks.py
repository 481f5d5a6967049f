"""Thin Prefect tasks over the plain pipeline steps of :mod:`tasks`.

Each resolves its references, calls one plain function, publishes artifacts (markdown tables,
figures) to the Prefect UI and returns a small reference (URLs, metadata dicts): arrays move
between steps only through :mod:`storage`. Nothing here computes anything itself.
"""

from __future__ import annotations

import base64

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lineargan.config import DatasetConfig, FitConfig, fit_label
from lineargan.synthetic import ExportConfig
from storage.target import Target
from tasks import cache as cache_steps
from tasks import evaluate as eval_steps
from tasks import export as export_steps
from tasks import fit as fit_steps
from tasks import index as index_steps
from tasks.analyses import runner
from tasks.analyses.contract import AnalysisResult
from tasks.run_context import RunContext

# -- cache ------------------------------------------------------------------------------------


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


# -- export (labelled synthetic datasets) ------------------------------------------------------


@task(name="prepare-export")
def prepare_export(cfg: ExportConfig) -> tuple[str, list[int]]:
    """Create or reopen the export; returns (root, shards still to write)."""
    return export_steps.prepare_export(cfg)


@task(name="export-shard", task_run_name="shard-{shard}", retries=1, retry_delay_seconds=2)
def export_shard(cfg: ExportConfig, root: str, shard: int) -> bool:
    """Generate, label and write one shard (skipped when finished); True if written."""
    return export_steps.export_shard(cfg, root, shard)


@task(name="finalize-export")
def finalize_export(cfg: ExportConfig, root: str) -> dict:
    """The index with the quality filter, once every shard is written."""
    return export_steps.finalize_export(cfg, root)


# -- Table 1 ----------------------------------------------------------------------------------


@task(name="fit-extractor", task_run_name="fit-{cfg.extractor}")
def fit_extractor(cfg: FitConfig, ctx: RunContext) -> dict:
    """Train (or reuse) one of the run's Table 1 extractors on its training store; logs
    iteration and loss every ~10% of the fit."""
    logger = get_run_logger()
    logged = [-1]  # last decile logged
    label = fit_label(cfg.extractor, cfg.method)

    def progress(it: int, total: int, loss: float) -> None:
        decile = 10 * it // total
        if decile > logged[0]:
            logged[0] = decile
            logger.info("%s: iteration %d/%d, loss %.4f", label, it, total, loss)

    meta = fit_steps.fit_extractor(
        ctx.train_url, cfg, ctx.results_root, ctx.device, progress=progress
    )
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
            f" (L-BFGS stationarity tolerance met: |grad|_inf={meta['grad_norm']:.2e}, relative loss change "
            f"{meta['rel_change']:.2e})"
        )
    return how + f" (held-out loss plateau at {meta['heldout_loss']:.5f})"


@task(name="evaluate-extractor", task_run_name="evaluate-{fit_meta[fit_label]}")
def evaluate_extractor(fit_meta: dict, ctx: RunContext) -> pd.DataFrame:
    """Per-class IoU of one fit on the run's evaluation store (a DataFrame of a few rows)."""
    return eval_steps.evaluate_fit(
        fit_meta, ctx.eval_url, ctx.results_root, ctx.profile, ctx.run_id, ctx.device
    )["all"]


# -- analyses -------------------------------------------------------------------------------------


@task(name="run-analysis", task_run_name="{name}")
def run_analysis(name: str, ctx: RunContext, params, fits: dict | None = None) -> dict:
    """The work of one registered analysis (reused when finished with the same key)."""
    result = runner.run_analysis(name, ctx, params, fits)
    get_run_logger().info("%s %s (key %s)", name, "reused" if result.reused else "done", result.key)
    return result.to_dict()


@task(name="finish-analysis", task_run_name="{name}-report")
def finish_analysis(
    name: str, ctx: RunContext, params, result: dict, reference: dict | None = None
) -> dict:
    """Summary with Table 1's reference numbers, the rendered report and its artifacts."""
    done = runner.finish_analysis(name, ctx, params, AnalysisResult(**result), reference)
    create_markdown_artifact(key=f"{name}-{ctx.profile}".replace("_", "-"), markdown=done.markdown)
    publish_figures(done.figures)
    return done.to_dict()


# -- index ----------------------------------------------------------------------------------------


@task(name="write-results-index")
def write_results_index(results: list[dict], ctx: RunContext) -> str:
    """The combined report (one artifact) and the index of every file of this run."""
    parsed = [AnalysisResult(**r) for r in results]
    part, combined = index_steps.write_index_and_report(
        parsed, ctx.results_root, ctx.profile, ctx.run_id
    )
    create_markdown_artifact(
        key=f"paper-tables-{ctx.profile}",
        markdown=combined,
        description="All paper tables of this run",
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

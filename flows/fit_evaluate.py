"""The fit-and-evaluate flow: LSE, NSE-1, NSE-2 on the cached training split, IoU on the
evaluation split, Table 1 as Parquet + markdown artifact, and a Fig 3 style PNG."""

from __future__ import annotations

from prefect import flow
from prefect.futures import PrefectFuture

from flows.progress import wait_with_progress
from flows.runner import dask_cluster, dask_runner, device_tasks
from lineargan.config import RunConfig
from lineargan.paths import default_data_root, default_results_root
from storage.layout import dataset_store
from storage.target import Target
from tasks.prefect_tasks import evaluate_extractor, fit_extractor, render_figure3, write_table1


def current_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.root_flow_run_id or flow_run.id or "local")


# Relative cost of one training sample (NSE-2's 3×3 convolutions dominate, LSE is a 1×1 map).
_FIT_COST = {"NSE-2": 3, "NSE-1": 2, "LSE": 1}


def submit_fits(
    config: RunConfig, train_url: str, eval_url: str, results_root: str, run_id: str
) -> tuple[dict[str, PrefectFuture], dict[str, PrefectFuture]]:
    """Fit every extractor in parallel; each evaluation starts as soon as its fit finishes.

    Fits are submitted most expensive first: Dask starts tasks in submission order, so on two
    workers NSE-2 (the long pole) starts at once instead of waiting for a cheaper fit to end.
    Returns (fits, evaluations), each keyed by fit label ("LSE", "LSE:converged", ...) in
    :meth:`RunConfig.table1_fits` order.
    """
    configs = config.table1_fits()
    order = sorted(configs, key=lambda k: -_FIT_COST.get(configs[k].extractor, 0))
    with device_tasks():
        fits = {
            k: fit_extractor.submit(train_url, configs[k], results_root, config.device)
            for k in order
        }
        evals = {
            k: evaluate_extractor.submit(
                fits[k], eval_url, results_root, config.profile, run_id, config.device
            )
            for k in order
        }
    return {k: fits[k] for k in configs}, {k: evals[k] for k in configs}


def report_table1(
    config: RunConfig,
    metas: list[dict],
    frames: list,
    train_url: str,
    eval_url: str,
    results_root: str,
    run_id: str,
) -> dict:
    """Table 1 Parquet + markdown + artifacts and the Fig 3 PNG; returns the result dict."""
    result = write_table1(results_root, metas, frames, train_url, eval_url, config.profile, run_id)
    figures = render_figure3(
        results_root,
        eval_url,
        metas,
        config.resolved_profile.figure_samples,
        config.profile,
        config.device,
    )
    print(result["markdown"])
    return {**result, "figures": result["figures"] + figures}


@flow(name="fit-evaluate-stage")
def fit_evaluate_stage(
    config: RunConfig, train_url: str, eval_url: str, results_root: str, run_id: str
) -> dict:
    """Table 1 only (Dask runner set by the caller)."""
    fits, evals = submit_fits(config, train_url, eval_url, results_root, run_id)
    metas = wait_with_progress(fits.values(), "fits")
    frames = wait_with_progress(evals.values(), "evaluations")
    return report_table1(config, metas, frames, train_url, eval_url, results_root, run_id)


def stage_urls(config: RunConfig, data_root: str) -> tuple[str, str]:
    def url(split: str) -> str:
        return dataset_store(data_root, config.dataset(split)).url

    return url("train"), url("eval")


@flow(name="fit-evaluate", log_prints=True)
def fit_evaluate(config: RunConfig = RunConfig()) -> dict:
    """Fit and evaluate on stores already built by the cache flow (same config)."""
    data_root = config.data_root or default_data_root()
    results_root = config.results_root or default_results_root()
    Target(results_root).ensure_writable()
    train_url, eval_url = stage_urls(config, data_root)
    with dask_cluster(config.dask_address, config.n_workers) as address:
        return fit_evaluate_stage.with_options(task_runner=dask_runner(address))(
            config, train_url, eval_url, results_root, current_run_id()
        )

"""Fit and evaluation tasks."""

from __future__ import annotations

from prefect import get_run_logger, task

from lineargan.config import FitConfig
from lineargan.jobs import evaluate as eval_jobs
from lineargan.jobs import fit as fit_jobs


@task(name="fit-extractor", task_run_name="fit-{cfg.extractor}")
def fit_extractor(train_url: str, cfg: FitConfig, results_root: str, device: str = "auto") -> dict:
    """Train (or reuse) one extractor; logs progress every ~10% of the iterations."""
    logger = get_run_logger()
    logged = [-1]  # last decile logged

    def progress(it: int, total: int, loss: float) -> None:
        decile = 10 * it // total
        if decile > logged[0]:
            logged[0] = decile
            logger.info("%s: iteration %d/%d, loss %.4f", cfg.extractor, it, total, loss)

    meta = fit_jobs.fit_extractor(train_url, cfg, results_root, device, progress=progress)
    logger.info(
        "%s %s (%s)", cfg.extractor, "reused" if meta["reused"] else "trained", meta["fit_dir"]
    )
    return meta


@task(name="evaluate-extractor", task_run_name="evaluate-{fit_meta[extractor]}")
def evaluate_extractor(
    fit_meta: dict,
    eval_url: str,
    results_root: str,
    profile: str,
    run_id: str,
    device: str = "auto",
):
    """Per-class IoU of one fit on the evaluation store (a DataFrame of a few rows)."""
    return eval_jobs.evaluate_fit(fit_meta, eval_url, results_root, profile, run_id, device)

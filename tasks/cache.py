"""Cache-stage tasks: prepare a store, fill one chunk, finalize."""

from __future__ import annotations

from prefect import task

from lineargan.config import DatasetConfig
from lineargan.jobs import cache as jobs


@task(name="prepare-store", task_run_name="prepare-{cfg.split}-n{cfg.n}")
def prepare_store(cfg: DatasetConfig, data_root: str) -> tuple[str, list[int], int]:
    """Create or reopen the dataset's store; returns (URL, chunks still to compute, all chunks)."""
    return jobs.prepare_store(cfg, data_root)


@task(name="cache-chunk", task_run_name="chunk-{index}", retries=1, retry_delay_seconds=2)
def cache_chunk(store_url: str, index: int, device: str = "auto") -> bool:
    """Generate + label + write one chunk (skipped when already done); True if computed."""
    return jobs.fill_chunk(store_url, index, device)


@task(name="finalize-store")
def finalize_store(store_url: str) -> dict:
    """Mark the store complete once every chunk is done."""
    return jobs.finalize_store(store_url)

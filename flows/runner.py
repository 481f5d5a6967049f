"""Dask task runners: a LocalCluster by default, or an existing cluster by address.

``reproduce`` starts one LocalCluster for the whole run and hands its address to each stage,
so the cache and fit stages share workers (and their per-process model caches).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect_dask import DaskTaskRunner


def _limit_threads(n_workers: int) -> None:
    # Workers inherit the environment: one torch thread per worker on a small machine.
    cores = os.cpu_count() or 1
    os.environ.setdefault("LINEARGAN_TORCH_THREADS", str(max(1, cores // max(1, n_workers))))


@contextmanager
def dask_cluster(address: str | None, n_workers: int) -> Iterator[str]:
    """Yield a scheduler address: ``address`` itself, or a LocalCluster started (and stopped) here."""
    if address:
        yield address
        return
    from distributed import LocalCluster

    _limit_threads(n_workers)
    _share_api_url()
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.WARNING,
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _share_api_url() -> None:
    """Point worker processes at this process's Prefect API.

    Without a configured server each process would start its own temporary server (seconds
    each, and task runs scattered over several databases); sharing the one this flow uses
    keeps ephemeral runs fast and their task runs visible in one place.
    """
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.client.orchestration import get_client

    url = get_client(sync_client=True).api_url
    if url:
        os.environ["PREFECT_API_URL"] = str(url).rstrip("/")


def dask_runner(address: str) -> DaskTaskRunner:
    return DaskTaskRunner(address=address)

"""The GPU path's plumbing, checked on CPU: model tasks take one GPU slot each (so two never
share a card), pinned prefetch changes no batch, and device binding is inert without GPUs."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from distributed import LocalCluster, get_worker
from prefect import flow, task
from prefect_dask import DaskTaskRunner

from flows.runner import GPU_RESOURCE, device_tasks
from storage.feature_store import FeatureStore
from storage.stream import ChunkStream
from storage.target import Target
from tasks.process import bind_worker_gpu


@task
def hold_card(i: int) -> tuple[str, float, float]:
    start = time.monotonic()
    time.sleep(0.6)
    return str(get_worker().name), start, time.monotonic()


@flow
def fan_out(n: int) -> list[tuple[str, float, float]]:
    with device_tasks():
        futures = [hold_card.submit(i) for i in range(n)]
    return [f.result() for f in futures]


def overlaps(spans: list[tuple[str, float, float]]) -> int:
    """How many pairs of tasks ran at the same time on the same worker."""
    return sum(
        a[0] == b[0] and a[1] < b[2] and b[1] < a[2]
        for i, a in enumerate(spans)
        for b in spans[i + 1 :]
    )


@pytest.fixture(scope="module")
def gpu_worker():
    """One worker with two threads that offers one GPU slot (an abstract Dask resource)."""
    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        resources=GPU_RESOURCE,
        dashboard_address=None,
        silence_logs=logging.WARNING,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.mark.parametrize("slots, expect_overlap", [("1", False), ("0", True)])
def test_model_tasks_never_share_a_card(gpu_worker, monkeypatch, slots, expect_overlap):
    monkeypatch.setenv("LINEARGAN_GPU_RESOURCES", slots)
    spans = fan_out.with_options(task_runner=DaskTaskRunner(address=gpu_worker))(4)
    # with the slot asked for, the two threads take the tasks one at a time; without it
    # (the control) they run two at once
    assert (overlaps(spans) > 0) is expect_overlap


def test_pinned_prefetch_gives_the_same_batches(train_store_url):
    store = FeatureStore.open(Target(train_store_url))
    with ChunkStream(store, seed=3) as plain, ChunkStream(store, seed=3, pin_memory=True) as pin:
        for _ in range(5):
            (fa, la), (fb, lb) = plain.next_batch(24), pin.next_batch(24)
            np.testing.assert_array_equal(la, lb)
            for x, y in zip(fa, fb, strict=True):
                np.testing.assert_array_equal(x, y)


def test_no_gpu_binding_without_gpus():
    assert bind_worker_gpu() is None


def test_a_cluster_without_gpu_slots_is_refused_up_front(monkeypatch):
    from flows.runner import dask_cluster
    from lineargan.errors import LinearGanError

    monkeypatch.setenv("LINEARGAN_GPU_RESOURCES", "1")
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cpu_only,
        pytest.raises(LinearGanError, match="no worker .* offers one"),
        dask_cluster(cpu_only.scheduler_address, 1),
    ):
        pass


def _worker_threads_setting() -> str | None:
    import os

    return os.environ.get("LINEARGAN_TORCH_THREADS")


def test_a_local_clusters_thread_setting_reaches_its_workers_only(monkeypatch):
    """Cores ÷ workers torch threads in each worker, and nothing left in this process: a
    1-worker cluster started earlier in a long-lived process must not give the next
    cluster's 2 workers 2 threads each (4 threads on 2 cores ran the suite's deployment
    fits 4-8× slower)."""
    import os

    from distributed import Client

    from flows.runner import dask_cluster, worker_threads

    monkeypatch.delenv("LINEARGAN_TORCH_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert worker_threads(1) == {"LINEARGAN_TORCH_THREADS": "4"}
    assert worker_threads(3) == {"LINEARGAN_TORCH_THREADS": "1"}
    with dask_cluster(None, 2) as address, Client(address) as client:
        seen = set(client.run(_worker_threads_setting).values())
    assert seen == {"2"}
    assert "LINEARGAN_TORCH_THREADS" not in os.environ
    monkeypatch.setenv("LINEARGAN_TORCH_THREADS", "3")  # the user's choice wins
    assert worker_threads(2) == {"LINEARGAN_TORCH_THREADS": "3"}

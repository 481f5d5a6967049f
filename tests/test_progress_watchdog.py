"""Waiting on tasks fails with a clear error once every Dask worker is gone, instead of hanging."""

from __future__ import annotations

import logging

import pytest

import flows.progress as progress
from lineargan.errors import LinearGanError


class Done:
    def __init__(self, value: int) -> None:
        self.value = value

    def result(self) -> int:
        return self.value


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(progress, "POLL_S", 0.0)
    monkeypatch.setattr(progress, "WORKERLESS_GRACE_S", 0.05)
    monkeypatch.setattr(progress, "get_run_logger", lambda: logging.getLogger("test"))


def test_no_worker_left_fails_with_one_line_error(fast, monkeypatch):
    monkeypatch.setattr(progress, "wait", lambda pending, timeout: (set(), set(pending)))
    monkeypatch.setattr(progress, "dask_worker_count", lambda: 0)
    with pytest.raises(LinearGanError, match="every Dask worker of this run is gone") as err:
        progress.wait_with_progress([Done(1), Done(2)], "fits")
    assert "2 tasks" in str(err.value) and "rerun with the same parameters" in str(err.value)


def test_workers_coming_back_reset_the_clock(fast, monkeypatch):
    """Nannies restart killed workers: a short gap must not fail the run."""
    futures = [Done(1), Done(2)]
    polls = iter([(set(), set(futures))] * 3 + [(set(futures), set())])
    counts = iter([0, 1, 0])
    monkeypatch.setattr(progress, "wait", lambda pending, timeout: next(polls))
    monkeypatch.setattr(progress, "dask_worker_count", lambda: next(counts))
    monkeypatch.setattr(progress, "WORKERLESS_GRACE_S", 3600.0)
    assert progress.wait_with_progress(futures, "fits") == [1, 2]


def test_worker_count_is_none_without_a_dask_client():
    assert progress.dask_worker_count() is None


def test_worker_count_of_a_live_cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster, Client(cluster):
        assert progress.dask_worker_count() == 1

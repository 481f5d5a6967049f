"""Waiting on tasks fails with a clear error once every Dask worker is gone, instead of hanging;
a worker that comes back restarts the grace period; progress is logged every ~10%."""

from __future__ import annotations

import logging

import pytest

import flows.progress as progress
from lineargan.errors import LinearGanError

GRACE_S = 100.0
POLL_S = 60.0  # simulated seconds per poll: two workerless polls in a row exceed the grace


class Done:
    def __init__(self, value: int) -> None:
        self.value = value

    def result(self) -> int:
        return self.value


class FakeClock:
    """Stands in for ``time.monotonic``; only the fake ``wait`` moves it (one poll = POLL_S)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress, "monotonic", fake)
    monkeypatch.setattr(progress, "WORKERLESS_GRACE_S", GRACE_S)
    monkeypatch.setattr(progress, "get_run_logger", lambda: logging.getLogger("test-progress"))
    return fake


def scripted(monkeypatch, clock: FakeClock, polls: list, worker_counts: list[int]) -> list[int]:
    """Make each ``wait`` return the next scripted (finished, pending) pair after POLL_S
    simulated seconds and each worker count the next scripted one; returns the counts served."""
    polls_it, counts_it, served = iter(polls), iter(worker_counts), []

    def fake_wait(pending, timeout):
        clock.now += POLL_S
        return next(polls_it)

    def fake_count() -> int:
        served.append(next(counts_it))
        return served[-1]

    monkeypatch.setattr(progress, "wait", fake_wait)
    monkeypatch.setattr(progress, "dask_worker_count", fake_count)
    return served


def test_no_worker_left_fails_with_one_line_error(clock, monkeypatch):
    futures = [Done(1), Done(2)]
    stuck = (set(), set(futures))
    # workerless at t+60 (clock starts) and t+120 (60 s ≤ grace), fails at t+180 (120 s > grace)
    served = scripted(monkeypatch, clock, [stuck] * 10, [0] * 10)
    with pytest.raises(LinearGanError, match="every Dask worker of this run is gone") as err:
        progress.wait_with_progress(futures, "fits")
    msg = str(err.value)
    assert "2 tasks" in msg and "rerun with the same parameters" in msg and "\n" not in msg
    assert len(served) == 3  # not before the grace period is over, and not later


def test_workers_coming_back_reset_the_clock(clock, monkeypatch):
    """Nannies restart killed workers: a short gap must not fail the run.

    Workerless polls at 60, 180 and 240 s: without the reset the gap would be counted from 60 s
    and exceed the 100 s grace at 180 s; with it, each gap starts afresh and the run finishes.
    """
    futures = [Done(1), Done(2)]
    stuck, finished = (set(), set(futures)), (set(futures), set())
    served = scripted(monkeypatch, clock, [stuck] * 4 + [finished], [0, 1, 0, 0])
    assert progress.wait_with_progress(futures, "fits") == [1, 2]
    assert served == [0, 1, 0, 0]


def test_progress_is_logged_every_tenth(clock, monkeypatch, caplog):
    futures = [Done(i) for i in range(20)]
    polls = [({f}, set(futures[i + 1 :])) for i, f in enumerate(futures)]
    scripted(monkeypatch, clock, polls, [1] * 20)
    with caplog.at_level(logging.INFO, logger="test-progress"):
        assert progress.wait_with_progress(futures, "fits") == list(range(20))
    assert [r.getMessage() for r in caplog.records] == [f"fits: {k}/20" for k in range(2, 21, 2)]


def test_worker_count_is_none_without_a_dask_client():
    assert progress.dask_worker_count() is None


def test_worker_count_of_a_live_cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        assert progress.dask_worker_count() == 1


class Wrapped:
    """A future as Prefect's Dask and thread-pool futures hold it: ``wrapped_future.done()``."""

    def __init__(self, done_after: float) -> None:
        import time

        self.at = time.monotonic() + done_after
        self.timers: list = []

    def done(self) -> bool:
        import signal
        import time

        self.timers.append(signal.getitimer(signal.ITIMER_REAL))  # no alarm armed meanwhile
        return time.monotonic() >= self.at


def test_wait_returns_what_finished_without_an_alarm_timer():
    """prefect.futures.wait(timeout=...) arms SIGALRM, whose alarm can land inside its own
    Event.wait and break the lock ('release unlocked lock'); the run's wait arms nothing."""
    import time
    from types import SimpleNamespace

    soon, late = Wrapped(0.3), Wrapped(60)
    futures = [SimpleNamespace(wrapped_future=soon), SimpleNamespace(wrapped_future=late)]
    start = time.monotonic()
    finished, still = progress.wait(futures, timeout=5)
    assert finished == [futures[0]] and still == [futures[1]]
    assert 0.25 < time.monotonic() - start < 2
    finished, still = progress.wait(still, timeout=0.5)  # nothing finishes: back at the timeout
    assert finished == [] and still == [futures[1]]
    assert {t for t in soon.timers + late.timers} == {(0.0, 0.0)}

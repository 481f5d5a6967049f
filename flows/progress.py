"""Progress for mapped tasks: a Prefect log line every ~10% and a tqdm bar when interactive.

Waiting also watches the Dask cluster: if every worker is gone (killed, or unable to load the
code), Dask would keep the tasks pending forever and the run would hang with no error. After
``WORKERLESS_GRACE_S`` without a worker the wait fails with a one-line error instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from prefect import get_run_logger
from prefect.futures import PrefectFuture
from tqdm import tqdm

from flows.interrupt import raise_if_stopping, record
from lineargan.errors import LinearGanError

POLL_S = 10.0
WORKERLESS_GRACE_S = 120.0
CHECK_S = 0.2  # how often a wait looks at its futures

# The watchdog's clock, looked up at each call so tests can replace it: the grace period is
# minutes long, and only a controlled clock shows that a returning worker restarts it.
monotonic = time.monotonic


def dask_worker_count() -> int | None:
    """Workers of this process's default Dask client; None when there is no Dask client."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return None
    try:
        return len(client.scheduler_info().get("workers", {}))
    except Exception:  # the scheduler itself is gone: no workers either
        return 0


def _is_done(future: PrefectFuture) -> bool:
    wrapped = getattr(future, "wrapped_future", None)  # a Dask or concurrent.futures future
    if wrapped is not None and hasattr(wrapped, "done"):
        return bool(wrapped.done())
    return future.state.is_final()


def wait(
    pending: list[PrefectFuture], timeout: float
) -> tuple[list[PrefectFuture], list[PrefectFuture]]:
    """(finished, still pending) of ``pending`` once any has finished or ``timeout`` seconds
    have passed.

    Not ``prefect.futures.wait(timeout=...)``: on the main thread it arms a SIGALRM timer for
    the same deadline its own wait loop uses, and an alarm that lands inside that loop's
    ``threading.Event.wait`` raises through the condition's lock ("RuntimeError: release
    unlocked lock", a failed run; seen under load in the recipe end-to-end tests). Looking at
    the futures' own ``done()`` a few times a second needs no signal, and Ctrl-C still
    interrupts the sleep at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        finished = [f for f in pending if _is_done(f)]
        if finished or time.monotonic() >= deadline:
            return finished, [f for f in pending if f not in finished]
        time.sleep(CHECK_S)


def wait_with_progress(futures: Iterable[PrefectFuture], label: str) -> list:
    """Wait for ``futures`` (any order), logging ~10 progress lines and drawing a bar on a TTY."""
    futures = list(futures)
    total = len(futures)
    logger = get_run_logger()
    step = max(1, total // 10)
    pending, done = list(futures), 0
    workerless_since: float | None = None
    record(label, done, total)
    # The Prefect log lines are the record (UI, files); the bar is only for a person watching.
    with tqdm(total=total, desc=label, disable=not sys.stderr.isatty()) as bar:
        while pending:
            raise_if_stopping()
            finished, still = wait(pending, timeout=POLL_S)
            for fut in finished:
                fut.result()  # raise the first failure here
                done += 1
                bar.update(1)
                record(label, done, total)
                if done % step == 0 or done == total:
                    logger.info("%s: %d/%d", label, done, total)
            pending = list(still)
            if pending and dask_worker_count() == 0:
                if workerless_since is None:
                    workerless_since = monotonic()
                if monotonic() - workerless_since > WORKERLESS_GRACE_S:
                    raise LinearGanError(
                        f"{label}: every Dask worker of this run is gone and {len(pending)} "
                        "tasks can never finish (see the worker log: killed, out of memory, or "
                        "the code changed under a running run)",
                        "rerun with the same parameters: finished chunks, fits and analyses "
                        "are reused",
                    )
            else:
                workerless_since = None  # a worker is back (nannies restart killed ones)
    return [f.result() for f in futures]

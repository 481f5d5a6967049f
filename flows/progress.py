"""Progress for mapped tasks: a Prefect log line per step and a terminal bar when interactive.

Waiting also watches the Dask cluster: if every worker is gone (killed, or unable to load the
code), Dask would keep the tasks pending forever and the run would hang with no error. After
``WORKERLESS_GRACE_S`` without a worker the wait fails with a one-line error instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from prefect import get_run_logger
from prefect.futures import PrefectFuture, wait

from lineargan.errors import LinearGanError

POLL_S = 10.0
WORKERLESS_GRACE_S = 120.0


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


def wait_with_progress(futures: Iterable[PrefectFuture], label: str) -> list:
    """Wait for ``futures`` (any order), logging ~10 progress lines and drawing a bar on a TTY."""
    futures = list(futures)
    total = len(futures)
    logger = get_run_logger()
    step = max(1, total // 10)
    tty = sys.stderr.isatty()
    pending, done, workerless_since = list(futures), 0, None
    while pending:
        finished, still = wait(pending, timeout=POLL_S)
        for fut in finished:
            fut.result()  # raise the first failure here
            done += 1
            if tty:
                filled = int(30 * done / total)
                sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
                sys.stderr.flush()
            if done % step == 0 or done == total:
                logger.info("%s: %d/%d", label, done, total)
        pending = list(still)
        if pending and dask_worker_count() == 0:
            workerless_since = workerless_since or time.monotonic()
            if time.monotonic() - workerless_since > WORKERLESS_GRACE_S:
                raise LinearGanError(
                    f"{label}: every Dask worker of this run is gone and {len(pending)} tasks "
                    "can never finish (see the worker log: killed, out of memory, or the code "
                    "changed under a running run)",
                    "rerun with the same parameters: finished chunks, fits and analyses are reused",
                )
        else:
            workerless_since = None
    if tty and total:
        sys.stderr.write("\n")
    return [f.result() for f in futures]

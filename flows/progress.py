"""Progress for mapped tasks: a Prefect log line per step and a terminal bar when interactive."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed


def wait_with_progress(futures: Iterable[PrefectFuture], label: str) -> list:
    """Wait for ``futures`` (any order), logging ~10 progress lines and drawing a bar on a TTY."""
    futures = list(futures)
    total = len(futures)
    logger = get_run_logger()
    step = max(1, total // 10)
    tty = sys.stderr.isatty()
    for done, fut in enumerate(as_completed(futures), start=1):
        fut.result()  # raise the first failure here
        if tty:
            filled = int(30 * done / total)
            sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
            sys.stderr.flush()
        if done % step == 0 or done == total:
            logger.info("%s: %d/%d", label, done, total)
    if tty and total:
        sys.stderr.write("\n")
    return [f.result() for f in futures]

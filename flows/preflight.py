"""Pre-flight: the inputs of a run that can be checked without running it, checked before any
Prefect server or Dask cluster starts.

A command line calls :func:`check_inputs` before it calls its flow, so a mistake is one line
within seconds instead of a traceback after the server, the cluster and hundreds of log lines;
the flows call it too, for runs started as deployments, whose parameters no command line saw.
Rerun inside the flow of a command line it is cheap: the models it loads stay cached in the
process for the cache stage, which would load them there anyway.
"""

from __future__ import annotations

from flows.runner import check_scheduler
from lineargan.config import DatasetConfig
from storage.target import Target
from tasks.cache import size_stores


def check_inputs(
    datasets: list[DatasetConfig],
    data_root: str,
    results_root: str | None = None,
    dask_address: str | None = None,
) -> None:
    """Refuse, with one :class:`~lineargan.errors.LinearGanError`, a run whose roots cannot be
    written (a file, a read-only place, an object store without credentials or out of reach),
    whose Dask scheduler does not answer, or whose stores cannot be made as asked: a checkpoint
    that is no torch file or pickles code, a store policy naming layers the generator lacks, a
    store already at the run's path made for another dataset (chunk size, weights), a store
    over its budget. The cheap checks go first."""
    for root in dict.fromkeys(r for r in (data_root, results_root) if r):
        Target(root).ensure_writable(quick=True)
    if dask_address:
        check_scheduler(dask_address)
    size_stores(datasets, data_root, announce=False)

"""Dask task runners: a LocalCluster by default, or an existing cluster by address.

``reproduce`` starts one LocalCluster for the whole run and hands its address to each stage,
so the cache and fit stages share workers (and their per-process model caches).

On a machine with GPUs the LocalCluster has one worker per GPU, each offering the abstract
resource ``GPU=1``, and every model-running task is submitted inside :func:`device_tasks`,
which asks for that resource: a worker then runs one such task at a time, so fanned-out
chunks, fits and analyses never share a card. Start an external cluster the same way
(``dask worker --resources GPU=1`` with ``CUDA_VISIBLE_DEVICES`` set per worker) and set
``LINEARGAN_GPU_RESOURCES=1`` where the flow runs if that machine has no GPU itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import dask
import torch
from distributed.diagnostics.plugin import WorkerPlugin
from prefect.exceptions import TerminationSignal
from prefect_dask import DaskTaskRunner

from lineargan.errors import LinearGanError

GPU_RESOURCE = {"GPU": 1}
# How long an external scheduler gets to answer before the run is refused (check_scheduler).
SCHEDULER_TIMEOUT_S = 10.0


def gpu_resources_enabled() -> bool:
    """Whether model tasks ask for a GPU slot: ``LINEARGAN_GPU_RESOURCES`` (1/0), else
    whether this process sees CUDA."""
    flag = os.environ.get("LINEARGAN_GPU_RESOURCES", "")
    return flag == "1" if flag in ("0", "1") else torch.cuda.is_available()


def device_tasks():
    """Context for submitting model-running tasks: one GPU slot each where GPUs are used."""
    return dask.annotate(resources=GPU_RESOURCE) if gpu_resources_enabled() else nullcontext()


def worker_threads(n_workers: int) -> dict[str, str]:
    """The environment a local cluster's workers get: torch threads = cores // workers (one
    each on a small machine), unless the user set ``LINEARGAN_TORCH_THREADS``.

    Passed to the workers only (the nanny's ``env``), never written into this process's
    environment: a long-lived process (a notebook, the test suite, the web app) that started a
    1-worker cluster would otherwise hand 2 threads per worker to every later cluster of 2
    workers, whose processes inherit it - 4 threads on 2 cores, fits several times slower."""
    if os.environ.get("LINEARGAN_TORCH_THREADS"):
        return {"LINEARGAN_TORCH_THREADS": os.environ["LINEARGAN_TORCH_THREADS"]}
    cores = os.cpu_count() or 1
    return {"LINEARGAN_TORCH_THREADS": str(max(1, cores // max(1, n_workers)))}


@contextmanager
def dask_cluster(address: str | None, n_workers: int) -> Iterator[str]:
    """Yield a scheduler address: ``address`` itself, or a LocalCluster started (and stopped) here."""
    if address:
        check_scheduler(address)
        yield address
        return
    from distributed import LocalCluster

    gpus = torch.cuda.device_count()
    if gpus:  # one worker per card; tasks.process.tune_process binds worker i to card i
        n_workers = gpus
    _share_api_url()
    with _workers_ignore_sigterm():
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.WARNING,
            plugins=(QuietClosingComms(),),
            env=worker_threads(n_workers),
            # offered whenever tasks ask for it (also when LINEARGAN_GPU_RESOURCES=1 on a CPU box)
            resources=GPU_RESOURCE if gpus or gpu_resources_enabled() else None,
        )
    try:
        yield cluster.scheduler_address
    except (KeyboardInterrupt, TerminationSignal):  # Ctrl-C (flows.interrupt), a cancellation
        _stop_workers_now(cluster)
        raise
    finally:
        cluster.close()


@contextmanager
def _workers_ignore_sigterm() -> Iterator[None]:
    """Start the cluster's worker processes with SIGTERM ignored (they inherit it).

    Prefect cancels a deployment's flow run with SIGTERM to the run's whole process group. A
    worker that dies of it under a running flow is restarted by its nanny (seconds: a new
    process imports torch), and the cluster cannot close before the restart is done. The flow
    process handles the SIGTERM and closes its cluster at once instead; its workers never
    outlive it (each exits when its parent's pipe closes).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # (signal dispositions can only be changed from the main thread)
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class QuietClosingComms(WorkerPlugin):
    """Keeps a closing worker from printing the traceback of a comm it closed itself.

    A worker stopped mid-task (Ctrl-C, a cancellation) closes its connections while a heartbeat
    to the scheduler may be in flight; Dask then logs "Failed to communicate with scheduler
    during heartbeat" at ERROR level with the ``CommClosedError`` traceback, in the worker's
    process, where the flow's logging settings do not reach. It is expected there, and noise
    beside the one line that says what the run finished. Connection errors of a worker that is
    not closing still print.
    """

    name = "lineargan-quiet-closing-comms"

    def setup(self, worker) -> None:
        self._filter = _ClosingCommFilter(worker)
        logging.getLogger("distributed.worker").addFilter(self._filter)

    def teardown(self, worker) -> None:
        logging.getLogger("distributed.worker").removeFilter(self._filter)


class _ClosingCommFilter(logging.Filter):
    """Drops records carrying a connection error (OSError, which CommClosedError is) while the
    worker closes."""

    def __init__(self, worker) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        from distributed.core import Status

        closing = self.worker.status in (Status.closing, Status.closed, Status.closing_gracefully)
        error = record.exc_info[0] if record.exc_info else None
        return not (closing and error is not None and issubclass(error, OSError))


def _stop_workers_now(cluster) -> None:
    """Stop the workers of a run that was interrupted or cancelled, without waiting for their
    tasks.

    A plain close lets each worker finish its running task for 4 s, then kills it; the work of
    an interrupted run is abandoned anyway (whatever finished is on disk, a partial chunk, fit
    or analysis is redone by the rerun), so the workers get under a second.

    The scheduler (in this process) then reports each closed worker stream at INFO level, at
    times with the ``CommClosedError`` traceback attached: expected here, and noise beside the
    one line that says what the run finished, so Dask's loggers drop to warnings first.
    """
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(max(logging.getLogger(name).level, logging.WARNING))

    async def close_workers() -> None:
        await asyncio.gather(*(nanny.close(timeout=1) for nanny in cluster.workers.values()))

    cluster.sync(close_workers)


def check_scheduler(address: str, timeout: float = SCHEDULER_TIMEOUT_S) -> None:
    """Refuse, within ``timeout`` seconds, an address where no Dask scheduler answers, and a
    cluster where model tasks would wait forever for a GPU slot nobody offers.

    Without it an unreachable scheduler surfaces as a traceback from the task runner half a
    minute after the Prefect server started; called before the run starts, it is one line.
    """
    from distributed.comm.addressing import get_address_host_port, parse_address

    fix = (
        "start the scheduler (`dask scheduler`) and pass the address it prints, e.g. "
        "tcp://HOST:8786, or leave dask_address unset to start a local cluster"
    )
    try:
        scheme, _ = parse_address(address)
        host, port = get_address_host_port(address) if scheme in ("tcp", "tls") else (None, 0)
    except ValueError as exc:
        raise LinearGanError(f"cannot read the Dask address {address!r} ({exc})", fix) from None
    try:
        if host is not None:  # a refused or unroutable port fails here at once, not after retries
            socket.create_connection((host, port), timeout=timeout).close()
        # in a thread of its own: a flow may call this where an event loop already runs
        with ThreadPoolExecutor(max_workers=1) as pool:
            identity = pool.submit(asyncio.run, _scheduler_identity(address, timeout)).result()
    except Exception as exc:  # noqa: BLE001 - refused, timed out, or not a Dask scheduler at all
        raise LinearGanError(
            f"no Dask scheduler answers at {address} within {timeout:g} s "
            f"({type(exc).__name__}: {exc})".replace("\n", " "),
            fix,
        ) from None
    workers = identity.get("workers", {}).values()
    if gpu_resources_enabled() and not any(w.get("resources", {}).get("GPU") for w in workers):
        raise LinearGanError(
            f"model tasks ask for a GPU slot but no worker at {address} offers one",
            "start workers with `dask worker ... --resources GPU=1`, or set "
            "LINEARGAN_GPU_RESOURCES=0 to run without GPU slots",
        )


async def _scheduler_identity(address: str, timeout: float) -> dict:
    """The scheduler's ``identity`` (its workers and their resources) over one connection: no
    Client, so nothing is left behind (threads, finalisers) when the address is wrong."""
    from distributed.core import rpc
    from distributed.security import Security

    args = Security().get_connection_args("client")
    async with rpc(address, timeout=timeout, connection_args=args) as scheduler:
        return await asyncio.wait_for(scheduler.identity(), timeout)


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

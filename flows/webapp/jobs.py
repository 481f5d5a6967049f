"""The browser app's long jobs (few-shot training, SIE, SCS): one at a time per model, queued.

A model's jobs run on one worker thread, in the order they were asked for; a request made while
``max_pending`` jobs already wait is refused as busy (HTTP 409) instead of piling up. The page
polls a job's state (queued, running, done, failed, cancelled), its progress and, for training,
its live preview. Cancelling sets a flag the job's progress callback reads between steps: the
job stops by raising :class:`JobCancelled` there, before it writes its outputs, so a cancelled
or failed job leaves nothing half written.
"""

from __future__ import annotations

import itertools
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lineargan.errors import LinearGanError

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


class JobCancelled(Exception):
    """Raised inside a job (from its progress callback) once the person cancelled it."""


class BusyError(LinearGanError):
    """A job asked for while the model's queue is full."""


@dataclass
class Job:
    """One long request: its state and what the page shows of it while it runs."""

    id: int
    kind: str
    state: str = QUEUED
    done: int = 0
    total: int = 0
    loss: float | None = None
    preview: dict | None = None
    result: dict | None = None
    error: dict | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def step(self, done: int, total: int, loss: float | None = None) -> None:
        """Progress from inside the job; raises :class:`JobCancelled` once cancelled."""
        self.done, self.total = done, total
        if loss is not None:
            self.loss = float(loss)
        if self.cancel_requested.is_set():
            raise JobCancelled

    def view(self) -> dict[str, Any]:
        """The JSON the page polls."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "loss": self.loss,
            "preview": self.preview,
            "result": self.result,
            "error": self.error,
        }


class JobQueue:
    """A model's jobs, run one at a time on a worker thread in request order."""

    def __init__(self, max_pending: int = 2) -> None:
        self.max_pending = max_pending
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._queue: queue.Queue[tuple[Job, Callable[[Job], dict]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="lineargan-jobs", daemon=True)
        self._worker.start()

    def submit(self, kind: str, work: Callable[[Job], dict]) -> Job:
        """Queue ``work(job)`` (returns the job's result); refused while the queue is full."""
        with self._lock:
            waiting = sum(j.state == QUEUED for j in self._jobs.values())
            if waiting >= self.max_pending:
                raise BusyError(
                    f"the model is busy: {waiting} jobs already wait for it",
                    "wait for a job to finish (or cancel one) and ask again",
                )
            job = Job(next(self._ids), kind)
            self._jobs[job.id] = job
        self._queue.put((job, work))
        return job

    def get(self, job_id: int) -> Job:
        """The job ``job_id``; an unknown id is a user error."""
        job = self._jobs.get(job_id)
        if job is None:
            raise LinearGanError(f"no job {job_id}", "use the id a request returned")
        return job

    def cancel(self, job_id: int) -> Job:
        """Ask job ``job_id`` to stop: a queued job never starts, a running one stops at its
        next progress call."""
        job = self.get(job_id)
        job.cancel_requested.set()
        with self._lock:
            if job.state == QUEUED:
                job.state = CANCELLED
        return job

    def active(self) -> list[Job]:
        """The jobs queued or running, oldest first."""
        return [j for j in self._jobs.values() if j.state in (QUEUED, RUNNING)]

    def close(self) -> None:
        """Stop the worker after the job it runs (queued jobs are dropped)."""
        for job in self.active():
            job.cancel_requested.set()
        self._queue.put(None)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            job, work = item
            with self._lock:
                if job.state == CANCELLED:
                    continue
                job.state = RUNNING
            try:
                job.result = work(job)
                job.state = DONE
            except JobCancelled:
                job.state = CANCELLED
            except LinearGanError as exc:
                job.error = {"error": exc.problem, "fix": exc.fix}
                job.state = FAILED
            except Exception as exc:  # a bug: the page says so, the server keeps serving
                traceback.print_exc()
                job.error = {"error": f"{type(exc).__name__}: {exc}", "fix": "see the server log"}
                job.state = FAILED

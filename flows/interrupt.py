"""Ctrl-C on a flow run from a terminal: stop in seconds, say what finished, exit 130.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group. In ephemeral mode
that group holds the flow's temporary Prefect server and its Dask worker processes, which all
die at once; the flow then reports its crash to the dead server, and the Prefect client
retries each request for about a minute (5 retries, 2 + 4 + 8 + 16 + 32 s): one minute per
flow run's state change and per log flush, minutes of connection-error tracebacks, exit 1.

So the entry points (``python -m flows.reproduce``, ``flows.cache``, ``flows.recipes``) call
:func:`supervise` before their heavy imports. The process the terminal started becomes a small
supervisor (standard library only): it runs the same command again as a child in a new
session, which the terminal's signals do not reach, and

- on the first Ctrl-C (or SIGTERM, SIGHUP) sends SIGINT to the child alone: its flow stops
  while its server and workers are still there to be shut down properly, and it prints one
  line (:func:`interrupted_line`: what finished, how to resume) and exits 130;
- if the child has not stopped after ``GRACE_S``, or at once on a second Ctrl-C, ends the
  child's whole process group (SIGTERM, then SIGKILL) and prints that line itself;
- once the child has exited, kills whatever is left in its process group, so no Dask worker
  or temporary server outlives the command; if the supervisor itself is killed, the child
  gets SIGINT (Linux) and stops as above;
- passes Ctrl-Z and ``fg`` on to the child's group;
- otherwise exits with the child's own code and prints nothing of its own.

The flow process records progress as it waits for work (:func:`record`), so the line can say
what finished; everything finished is on disk, keyed by its configuration, and a rerun of the
same command reuses it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import NoReturn

CHILD_ENV = "LINEARGAN_SUPERVISED"  # set in the child: it runs the flow itself
GRACE_S = 10.0  # the child's own stop: flows marked Crashed, workers and server stopped
TERM_S = 3.0  # after SIGTERM to the child's group, before SIGKILL
POLL_S = 0.05
RESUME = "rerun the same command to resume (finished work is reused)"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# label → [finished, total] of the waits of this process, in the order they started
_progress: dict[str, list[int]] = {}
_stop_requested = False


def record(label: str, done: int, total: int) -> None:
    """Note that ``done`` of ``total`` ``label`` (e.g. "fits") have finished in this run."""
    _progress[label] = [done, total]


def interrupted_line() -> str:
    """The one line printed when a run is stopped: what this run finished, how to resume."""
    done = ", ".join(f"{label} {d}/{n}" for label, (d, n) in _progress.items())
    return f"interrupted: {f'this run finished {done}; ' if done else ''}{RESUME}"


def supervise() -> None:
    """At a command's entry point: become the supervisor of a child that runs the command.

    Returns at once in the child (and where sessions do not exist); in the supervisor it exits
    with the child's code, or 128 + the signal's number when the run was stopped.
    """
    if os.name != "posix":
        return
    if os.environ.get(CHILD_ENV):
        # Until the run starts (stop_runs_on_interrupt) there is nothing to shut down: a
        # Ctrl-C during the imports exits at once, without a KeyboardInterrupt traceback.
        signal.signal(signal.SIGINT, _exit_now)
        return
    command = [sys.executable, *sys.orig_argv[1:]]
    sys.exit(Supervisor(command, {**os.environ, CHILD_ENV: "1"}).run())


def stop_runs_on_interrupt() -> None:
    """In a supervised child, as its run starts: from now on SIGINT stops the run.

    It raises KeyboardInterrupt (Prefect marks the flow runs Crashed while its server is up,
    the Dask cluster is closed on the way out) and is remembered: Prefect discards a
    KeyboardInterrupt that lands just after a subflow's own code has finished, so the flow
    raises it again at its next wait for work (:func:`raise_if_stopping`).
    """
    if signal.getsignal(signal.SIGINT) is _exit_now:
        signal.signal(signal.SIGINT, _interrupt)


def raise_if_stopping() -> None:
    """Raise KeyboardInterrupt again if the run was asked to stop (see above)."""
    if _stop_requested:
        raise KeyboardInterrupt


def exit_interrupted() -> NoReturn:
    """Exit 130; in a supervised child quickly, losing nothing.

    Prefect's queued logs and events are sent while its temporary server is still up (at a
    normal exit Python stops the server first, then flushes the logs and retries for
    seconds), the exit handlers run (the server's stop among them), and the teardown of the
    interpreter (seconds, with torch, Prefect and Dask loaded) is skipped.
    """
    if not os.environ.get(CHILD_ENV):
        sys.exit(130)
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=5)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _interrupt(_signum: int, _frame: object) -> None:
    global _stop_requested
    _stop_requested = True
    raise KeyboardInterrupt


def _exit_now(_signum: int, _frame: object) -> None:
    print(interrupted_line(), file=sys.stderr, flush=True)
    os._exit(130)


class Supervisor:
    """Runs ``command`` in its own session and turns the signals it receives into a stop.

    The stop signals' handler only records; the wait loop acts (within ``POLL_S``), so a
    signal that arrives while the child is being started is neither lost nor acted on twice.
    """

    def __init__(self, command: list[str], env: dict[str, str], grace_s: float = GRACE_S) -> None:
        self.command = command
        self.env = env
        self.grace_s = grace_s
        self.signals: list[int] = []
        self.pid = 0

    def run(self) -> int:
        for sig in STOP_SIGNALS:
            # a signal its parent told it to ignore (a background job) stays ignored
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, lambda signum, _frame: self.signals.append(signum))
        if signal.getsignal(signal.SIGTSTP) is not signal.SIG_IGN:
            signal.signal(signal.SIGTSTP, self._suspend)
        signal.signal(signal.SIGCONT, lambda _signum, _frame: self._signal_group(signal.SIGCONT))
        # stdin/stdout/stderr are inherited: the child writes to the terminal as before
        child = subprocess.Popen(
            self.command,
            env=self.env,
            start_new_session=True,
            preexec_fn=functools.partial(_stop_with_parent, os.getpid()),
        )
        self.pid = child.pid
        steps = self._stop_steps()
        due = 0.0  # when the next step of a stop is due
        while not self._exited():
            if len(self.signals) > 1:  # a second Ctrl-C: stop now
                self._signal_group(signal.SIGKILL)
            elif self.signals and time.monotonic() >= due:
                due = time.monotonic() + next(steps, POLL_S)
            time.sleep(POLL_S)
        self._signal_group(signal.SIGKILL)  # what the child left behind (workers, server)
        _, status = os.waitpid(self.pid, 0)
        child.returncode = code = os.waitstatus_to_exitcode(status)
        if code < 0:  # killed by a signal: report it as a shell does
            code = 128 - code
        if not self.signals or code == 0:  # (0: the run finished as it was being stopped)
            return code
        if code != 130:  # the child did not say what finished: killed, or it failed to stop
            with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                print(f"\n{interrupted_line()}", file=sys.stderr, flush=True)
        return 128 + self.signals[0]

    def _stop_steps(self) -> Iterator[float]:
        """Each step of a stop, yielding how long to give it: SIGINT to the child alone (its
        flow gets KeyboardInterrupt while its server and workers live on to be shut down),
        then SIGTERM and SIGKILL to its whole process group."""
        os.kill(self.pid, signal.SIGINT)
        yield self.grace_s
        self._signal_group(signal.SIGTERM)
        yield TERM_S
        self._signal_group(signal.SIGKILL)

    def _suspend(self, _signum: int, _frame: object) -> None:
        """Ctrl-Z: stop the child's group as the terminal would have, then this process."""
        self._signal_group(signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)

    def _exited(self) -> bool:
        """Whether the child has exited, leaving it unreaped: its PID, which is also its process
        group's ID, cannot be reused before the group is cleared."""
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def _signal_group(self, sig: int) -> None:
        if not self.pid:  # not started yet (and killpg(0) would mean this process's group)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is empty
            os.killpg(self.pid, sig)


def _stop_with_parent(supervisor: int) -> None:
    """In the child before it runs the command: SIGINT when the supervisor dies (Linux)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGINT)
    if os.getppid() != supervisor:  # it died before that: do not start
        os._exit(130)

"""The Ctrl-C supervisor of the entry points (flows.interrupt), with small real processes in
place of a flow: a child that starts a helper (as a flow starts its server and Dask workers)
and reacts to SIGINT as told. Each test starts the supervisor in a process group of its own
and signals that group the way a terminal does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.e2e_helpers import ROOT, as_terminal_job, kill_command

SUPERVISOR = (
    "import os, sys; from flows.interrupt import Supervisor; "
    "sys.exit(Supervisor(sys.argv[2:], dict(os.environ), grace_s=float(sys.argv[1])).run())"
)
CHILD = r"""
import signal, subprocess, sys, time
mode = sys.argv[1]
if mode.startswith("exit"):
    print("out")
    print("err", file=sys.stderr)
    sys.exit(int(mode[4:]))
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])

def stop(signum, frame):
    # a helper the terminal's Ctrl-C had reached would be gone by now
    print("child stopping, helper", "alive" if helper.poll() is None else "dead", flush=True)
    if mode == "clean":
        sys.exit(130)

signal.signal(signal.SIGINT, stop)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(helper.pid, flush=True)
time.sleep(120)  # (a test that fails leaves nothing running for long)
"""


@pytest.fixture
def start():
    """Start the supervisor of a child in ``mode``; whatever is left is killed afterwards."""
    started: list[subprocess.Popen] = []

    def start_(mode: str, grace_s: float = 10.0) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, str(grace_s), sys.executable, "-c", CHILD, mode],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # the terminal's foreground process group
            preexec_fn=as_terminal_job,  # SIGINT at its default, however pytest was started
        )
        started.append(proc)
        return proc

    yield start_
    for proc in started:
        kill_command(proc)
        proc.communicate()


def ctrl_c(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("code", [0, 1, 2])
def test_exit_code_and_output_pass_through_unchanged(start, code):
    proc = start(f"exit{code}")
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (code, "out\n", "err\n")


def test_ctrl_c_reaches_the_child_alone_which_stops_on_its_own(start):
    proc = start("clean")
    helper = int(proc.stdout.readline())
    ctrl_c(proc)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert out == "child stopping, helper alive\n"
    assert err == ""  # the child exited 130: it said what finished itself
    assert gone(helper)  # what the child left behind is removed


def test_a_child_that_does_not_stop_is_ended_after_the_grace_period(start):
    proc = start("ignores-sigint", grace_s=1.0)
    helper = int(proc.stdout.readline())
    t0 = time.monotonic()
    ctrl_c(proc)
    out, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 130
    assert 1.0 <= elapsed < 3.0  # SIGTERM to its group once the grace period is over
    assert err.strip() == "interrupted: rerun the same command to resume (finished work is reused)"
    assert gone(helper)


def test_a_second_ctrl_c_ends_everything_at_once(start):
    proc = start("stubborn", grace_s=60.0)  # ignores SIGINT and SIGTERM
    helper = int(proc.stdout.readline())
    ctrl_c(proc)
    assert proc.stdout.readline() == "child stopping, helper alive\n"
    t0 = time.monotonic()
    ctrl_c(proc)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 2.0
    assert proc.returncode == 130
    assert err.strip().startswith("interrupted: rerun the same command")
    assert gone(helper)


def test_ctrl_z_and_fg_reach_the_child(start):
    proc = start("clean")
    helper = psutil.Process(int(proc.stdout.readline()))
    child = helper.parent()
    os.killpg(proc.pid, signal.SIGTSTP)
    for p in (child, helper, psutil.Process(proc.pid)):
        wait_for_status(p, psutil.STATUS_STOPPED)
    os.killpg(proc.pid, signal.SIGCONT)  # what `fg` sends
    for p in (child, helper):
        wait_for_status(p, psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING)
    ctrl_c(proc)
    proc.communicate(timeout=30)
    assert proc.returncode == 130


def wait_for_status(proc: psutil.Process, *wanted: str) -> None:
    deadline = time.monotonic() + 10
    while proc.status() not in wanted:
        assert time.monotonic() < deadline, (proc, proc.status(), wanted)
        time.sleep(0.02)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_stops_when_its_supervisor_is_killed(start):
    proc = start("clean")
    helper = int(proc.stdout.readline())
    child = psutil.Process(helper).parent()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.stdout.readline() == "child stopping, helper alive\n"  # it got SIGINT
    child.wait(timeout=30)
    os.kill(helper, signal.SIGKILL)  # no supervisor left to remove it


def test_supervise_reruns_the_same_command_in_a_session_of_its_own():
    code = (
        "import os, sys; from flows.interrupt import supervise; supervise(); "
        "print(os.environ['LINEARGAN_SUPERVISED'], sys.argv[1:], os.getsid(0) == os.getpid())"
    )
    env = {k: v for k, v in os.environ.items() if k != "LINEARGAN_SUPERVISED"}
    proc = subprocess.run(
        [sys.executable, "-c", code, "a", "--b"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "1 ['a', '--b'] True\n", "")


def test_a_stopped_worker_keeps_quiet_about_the_connections_it_closed_itself():
    """A LocalCluster worker stopped mid-heartbeat (Ctrl-C) logged the heartbeat's
    CommClosedError traceback at ERROR level in its own process (seen in CI); the run's workers
    carry a filter that drops connection errors while they close, and only then."""
    import logging

    from distributed import Client

    from flows.runner import dask_cluster

    def probe(dask_worker) -> tuple[bool, bool, bool]:
        from types import SimpleNamespace

        from distributed.comm.core import CommClosedError
        from distributed.core import Status

        log = logging.getLogger("distributed.worker")
        (installed,) = [f for f in log.filters if getattr(f, "worker", None) is dask_worker]

        def record(error):
            exc_info = (type(error), error, None) if error else None
            return log.makeRecord(log.name, logging.ERROR, "w.py", 1, "heartbeat", (), exc_info)

        closing = type(installed)(SimpleNamespace(status=Status.closing))
        return (
            installed.filter(record(CommClosedError("Stream is closed"))),  # running: printed
            closing.filter(record(CommClosedError("Stream is closed"))),  # closing: dropped
            closing.filter(record(None)) and closing.filter(record(ValueError("bug"))),
        )

    with dask_cluster(None, 1) as address, Client(address) as client:
        (result,) = client.run(probe).values()
    assert result == (True, False, True)

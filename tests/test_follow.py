"""flows.follow: each log line once, in order, with its task or flow name; state changes; exit codes.

The default tests drive the follower with a fake in-memory API (no server). The slow test runs a
tiny flow with a subflow and tasks against a real temporary Prefect server on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from prefect.client.schemas.objects import StateType

from flows import follow
from flows.follow import Follower, SeenLogs, config_overrides, format_line, main, one_line
from tests.e2e_helpers import ROOT

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def log(seconds: float, message: str, flow_run_id=None, task_run_id=None, level=logging.INFO):
    return SimpleNamespace(
        id=uuid.uuid4(),
        timestamp=at(seconds),
        message=message,
        level=level,
        flow_run_id=flow_run_id,
        task_run_id=task_run_id,
    )


def local(seconds: float) -> str:
    return f"{at(seconds).astimezone():%H:%M:%S}"


# -- formatting ----------------------------------------------------------------------------------


def test_format_line_local_time_name_and_message():
    assert format_line(at(0), "fit-LSE-1a2", "LSE: iteration 5/832, loss 1.234") == (
        f"{local(0)} fit-LSE-1a2 | LSE: iteration 5/832, loss 1.234"
    )


def test_format_line_aligns_continuation_lines_and_marks_warnings():
    text = format_line(at(0), "reproduce", "Table 1\n| a |\n| 1 |", logging.WARNING)
    first, *rest = text.split("\n")
    assert first == f"{local(0)} reproduce | WARNING: Table 1"
    bar = first.index("|")
    assert [ln[bar:] for ln in rest] == ["| | a |", "| | 1 |"]
    assert all(not ln[:bar].strip() for ln in rest)


def test_one_line_takes_the_first_non_empty_line_and_shortens():
    assert one_line("\n  boom: bad input \nTraceback ...") == "boom: bad input"
    assert one_line(None) == ""
    assert len(one_line("x" * 1000, limit=50)) == 50


# -- dedup ---------------------------------------------------------------------------------------


def test_overlapping_reads_print_each_line_once_in_timestamp_order():
    seen = SeenLogs(lookback_s=30)
    a, b, c = log(1, "a"), log(2, "b"), log(3, "c")
    assert [lg.message for lg in seen.accept([b, a])] == ["a", "b"]
    assert [lg.message for lg in seen.accept([a, b, c])] == ["c"]  # the window is read again
    assert seen.accept([a, b, c]) == []
    assert seen.watermark == at(3)


def test_a_late_line_inside_the_window_is_printed_once():
    seen = SeenLogs(lookback_s=30)
    seen.accept([log(0, "early"), log(20, "newest")])
    late = log(5, "sent late by a busy worker")
    assert seen.accept([late]) == [late]
    assert seen.accept([late]) == []
    assert seen.cutoff(now=at(100)) == at(20) - timedelta(seconds=30)


def test_the_window_never_runs_ahead_of_the_local_clock():
    seen = SeenLogs(lookback_s=30)
    seen.accept([log(3600, "from a clock one hour ahead")])
    assert seen.cutoff(now=at(10)) == at(10) - timedelta(seconds=30)


def test_memory_holds_only_the_window():
    seen = SeenLogs(lookback_s=10)
    for second in range(0, 10_000, 1):
        seen.accept([log(second, "x"), log(second + 0.5, "y")])
    assert len(seen) <= 2 * 11 + 2

    capped = SeenLogs(lookback_s=1e9, max_seen=100)
    capped.accept([log(i, "x") for i in range(1000)])
    assert len(capped) == 100


# -- the follower against a fake API -------------------------------------------------------------


class FakeAPI:
    """The few client calls the follower makes, over in-memory runs and logs.

    ``script`` is a list of callables; each sleep of the follower applies the next one (the world
    moves on between polls). Filters and paging are honoured like the server does.
    """

    def __init__(self, script=()):
        self.flows = {}
        self.runs = {}
        self.parents = {}  # child flow run id -> parent flow run id
        self.task_runs = {}
        self.logs = []
        self.script = list(script)
        self.fail_next = 0
        self.log_reads = 0

    # world building
    def add_flow_run(self, flow_name, run_name, parent=None):
        flow_id = uuid.uuid4()
        self.flows[flow_id] = SimpleNamespace(id=flow_id, name=flow_name)
        run = SimpleNamespace(id=uuid.uuid4(), name=run_name, flow_id=flow_id, state=None)
        self.runs[run.id] = run
        if parent is not None:
            self.parents[run.id] = parent.id
        return run

    def set_state(self, run, kind, seconds, name=None, message=None):
        run.state = SimpleNamespace(
            type=kind, name=name or kind.value.title(), message=message, timestamp=at(seconds)
        )

    def add_task_run(self, name):
        tr = SimpleNamespace(id=uuid.uuid4(), name=name)
        self.task_runs[tr.id] = tr
        return tr

    def emit(self, *logs):
        self.logs.extend(logs)

    def sleep(self, _seconds):
        if self.script:
            self.script.pop(0)(self)

    # client calls
    def _maybe_fail(self):
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("connection refused")

    def read_flow_run(self, run_id):
        self._maybe_fail()
        return self.runs[run_id]

    def read_flow_runs(self, flow_run_filter, limit, offset):
        parents = set(flow_run_filter.parent_flow_run_id.any_)
        found = [r for rid, r in self.runs.items() if self.parents.get(rid) in parents]
        return found[offset : offset + limit]

    def read_logs(self, log_filter, limit, offset, sort):
        self.log_reads += 1
        ids = set(log_filter.flow_run_id.any_)
        after = log_filter.timestamp.after_ if log_filter.timestamp else None
        out = [
            lg
            for lg in sorted(self.logs, key=lambda lg: lg.timestamp)
            if lg.flow_run_id in ids
            and lg.level >= log_filter.level.ge_
            and (after is None or lg.timestamp >= after)
        ]
        return out[offset : offset + limit]

    def read_task_runs(self, task_run_filter, limit):
        return [self.task_runs[i] for i in task_run_filter.id.any_ if i in self.task_runs][:limit]

    def read_flow(self, flow_id):
        return self.flows[flow_id]

    def set_flow_run_state(self, run_id, state):
        self.runs[run_id].state = state


def follower(api, root, lines):
    clock = iter(range(0, 10**6))
    return Follower(
        api, root.id, lines.append, poll_s=0, sleep=api.sleep, clock=lambda: next(clock)
    )


def test_follows_a_run_with_a_subflow_and_tasks_to_completion(capsys):
    api = FakeAPI()
    root = api.add_flow_run("reproduce", "brave-otter")
    api.set_state(root, StateType.RUNNING, 0)
    api.emit(log(1, "reproduce: profile smoke", root.id))

    def subflow_starts(api):
        api.stage = api.add_flow_run("reproduce-stage", "calm-eel", parent=root)
        api.set_state(api.stage, StateType.RUNNING, 2)
        api.fit = api.add_task_run("fit-LSE-1a2")
        # lines the follower has not seen yet, stamped before what it printed next
        api.emit(
            log(2.5, "LSE: iteration 1/4, loss 2.0", api.stage.id, api.fit.id),
            log(3, "cache chunks: 1/2", api.stage.id),
        )
        api.emit(log(4, "cache chunks: 2/2", root.id))

    def more_lines_and_a_late_one(api):
        api.emit(
            log(3.5, "LSE: iteration 2/4, loss 1.5", api.stage.id, api.fit.id),  # arrived late
            log(6, "LSE: iteration 4/4, loss 1.0", api.stage.id, api.fit.id),
            log(7, "debug noise", api.stage.id, level=logging.DEBUG),
        )

    def everything_ends(api):
        api.set_state(api.stage, StateType.COMPLETED, 8)
        api.set_state(root, StateType.COMPLETED, 9)
        api.emit(log(8.5, "| Table 1 |", root.id))

    def a_line_after_the_final_state(api):
        api.emit(log(9.5, "results: tables under /tmp/r", root.id))

    api.script = [
        subflow_starts,
        more_lines_and_a_late_one,
        everything_ends,
        a_line_after_the_final_state,
    ]
    lines = []
    assert follower(api, root, lines).run() == 0
    assert lines == [
        format_line(at(0), "reproduce", "[Running]"),
        format_line(at(1), "reproduce", "reproduce: profile smoke"),
        format_line(at(2), "reproduce-stage", "[Running]"),
        format_line(at(2.5), "fit-LSE-1a2", "LSE: iteration 1/4, loss 2.0"),
        format_line(at(3), "reproduce-stage", "cache chunks: 1/2"),
        format_line(at(4), "reproduce", "cache chunks: 2/2"),
        format_line(at(3.5), "fit-LSE-1a2", "LSE: iteration 2/4, loss 1.5"),
        format_line(at(6), "fit-LSE-1a2", "LSE: iteration 4/4, loss 1.0"),
        format_line(at(8), "reproduce-stage", "[Completed]"),
        format_line(at(8.5), "reproduce", "| Table 1 |"),
        format_line(at(9), "reproduce", "[Completed]"),
        format_line(at(9.5), "reproduce", "results: tables under /tmp/r"),
        "Flow run finished successfully in 'Completed'.",
    ]
    assert capsys.readouterr().err == ""


def test_every_line_of_a_busy_poll_is_read_through_pages():
    api = FakeAPI()
    root = api.add_flow_run("cache", "busy-bee")
    api.set_state(root, StateType.COMPLETED, 0)
    api.emit(*[log(i / 100, f"line {i}", root.id) for i in range(450)])
    lines = []
    assert follower(api, root, lines).run() == 0
    assert [ln.split(" | ")[1] for ln in lines if "line " in ln] == [
        f"line {i}" for i in range(450)
    ]


def test_a_failed_run_exits_1_with_a_one_line_error(capsys):
    api = FakeAPI()
    root = api.add_flow_run("reproduce", "sad-cat")
    api.set_state(
        root,
        StateType.FAILED,
        5,
        message="Flow run encountered an exception: LinearGanError: no space left\nTraceback",
    )
    lines = []
    assert follower(api, root, lines).run() == 1
    assert lines == [
        format_line(
            at(5),
            "reproduce",
            "[Failed: Flow run encountered an exception: LinearGanError: no space left]",
        )
    ]
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: flow run 'sad-cat' ended Failed: Flow run encountered an exception: "
        "LinearGanError: no space left"
    )


def test_a_short_api_outage_is_ridden_out_and_a_long_one_is_an_error(capsys):
    api = FakeAPI()
    root = api.add_flow_run("reproduce", "patient-owl")
    api.set_state(root, StateType.RUNNING, 0)
    api.fail_next = 3
    api.script = [lambda a: None] * 3 + [lambda a: a.set_state(root, StateType.COMPLETED, 1)]
    lines = []
    assert follower(api, root, lines).run() == 0
    assert lines[-1] == "Flow run finished successfully in 'Completed'."

    api.set_state(root, StateType.RUNNING, 2)
    api.fail_next = 10**6
    assert follower(api, root, []).run() == 1
    assert "error: lost the Prefect API after" in capsys.readouterr().err


def test_a_run_never_picked_up_gets_a_hint_and_a_timeout(capsys):
    api = FakeAPI()
    root = api.add_flow_run("reproduce", "lonely-run")
    api.set_state(root, StateType.SCHEDULED, 0)
    lines = []
    assert follower(api, root, lines).run(timeout_s=follow.WAITING_HINT_S + 5) == 1
    assert any("is a worker polling its work pool?" in ln for ln in lines)
    assert "still Scheduled after" in capsys.readouterr().err


def test_ctrl_c_cancels_the_run_and_waits_for_its_worker_to_stop_it(capsys):
    api = FakeAPI()
    root = api.add_flow_run("reproduce", "brave-otter")
    api.set_state(root, StateType.RUNNING, 0)
    api.script = [
        lambda a: None,  # the worker sees the cancellation and stops the run's processes
        lambda a: a.set_state(root, StateType.CANCELLED, 5, message="cancelled successfully"),
    ]
    assert follower(api, root, []).cancel() == 130
    assert root.state.type == StateType.CANCELLED
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"follow: cancelling flow run {root.id}")
    assert err[1:] == [
        "interrupted: flow run 'brave-otter' Cancelled; run the deployment again to resume "
        "(finished work is reused)"
    ]


def test_ctrl_c_waits_for_a_cancellation_only_so_long(capsys):
    api = FakeAPI()
    root = api.add_flow_run("reproduce", "stuck-run")
    api.set_state(root, StateType.RUNNING, 0)
    assert follower(api, root, []).cancel(wait_s=10) == 130
    assert root.state.type == StateType.CANCELLING  # what this command asked for
    assert "flow run 'stuck-run' Cancelling;" in capsys.readouterr().err


def test_main_rejects_a_bad_id(capsys):
    assert follow.main(["not-a-uuid"]) == 1
    assert "is not a flow run id" in capsys.readouterr().err


# -- against a real server -----------------------------------------------------------------------

TINY_FLOW = """
import sys, time
from pathlib import Path
from prefect import flow, task, get_run_logger
from prefect.runtime import flow_run

@task
def step(i):
    time.sleep(0.3)
    get_run_logger().info("LSE: iteration %d/3, loss %.1f", i, 1.0 / i)

@flow(name="tiny-stage")
def stage():
    for i in (1, 2, 3):
        step(i)
    print("cache chunks: 1/1")

@flow(name="tiny", log_prints=True)
def tiny(fail: bool = False):
    Path(sys.argv[1]).write_text(flow_run.id)
    time.sleep(3)  # the follower is already watching
    print("tiny: starting")
    stage()
    if fail:
        raise RuntimeError("tiny failure")
    print("tiny: done")

tiny(fail=sys.argv[2] == "fail")
"""


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A Prefect server of these tests only, on 127.0.0.1, stopped by PID at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    home = tmp_path_factory.mktemp("prefect-home")
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "the Prefect server exited"
                time.sleep(1)
        env["PREFECT_API_URL"] = url
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["complete", "fail"])
def test_follow_a_live_flow_run_on_a_real_server(prefect_server, tmp_path, outcome):
    script, id_file = tmp_path / "tiny.py", tmp_path / "flow_run_id"
    script.write_text(textwrap.dedent(TINY_FLOW))
    flow_proc = subprocess.Popen(
        [sys.executable, str(script), str(id_file), outcome], env=prefect_server
    )
    try:
        for _ in range(600):
            if id_file.exists() and id_file.read_text():
                break
            assert flow_proc.poll() is None, "the flow exited before it started"
            time.sleep(0.1)
        done = subprocess.run(
            [sys.executable, "-m", "flows.follow", id_file.read_text(), "--poll", "0.5"],
            env=prefect_server,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
    finally:
        flow_proc.wait(timeout=120)
    out = done.stdout.splitlines()
    messages = [ln.split(" | ", 1)[1] for ln in out if " | " in ln]
    for i in (1, 2, 3):
        assert sum(m == f"LSE: iteration {i}/3, loss {1.0 / i:.1f}" for m in messages) == 1, out
    assert any(" tiny-stage | cache chunks: 1/1" in ln for ln in out), out
    assert any(" tiny-stage | [Completed]" in ln for ln in out), out
    assert any("step-" in ln and "LSE: iteration 1/3" in ln for ln in out), out
    if outcome == "complete":
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert out[-1] == "Flow run finished successfully in 'Completed'."
    else:
        assert done.returncode == 1
        assert done.stderr.strip().splitlines()[-1].startswith("error: flow run '")
        assert "ended Failed" in done.stderr and "tiny failure" in done.stderr


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ('{"analyses": [', "--config is not valid JSON"),
        ('["fewshot"]', "must be a JSON object"),
        ('{"profile": "quick"}', "cannot change the profile"),
        ('{"analyses": ["nope"]}', "unknown analysis 'nope'"),
        ('{"n_workers": "x"}', "--config sets n_workers wrongly"),
    ],
)
def test_a_bad_config_change_is_one_line_before_any_run(capsys, config, says):
    """`scripts/run.sh PROFILE CONFIG` checks CONFIG this way before it starts a server."""
    assert main(["--deployment", "reproduce/smoke", "--config", config, "--check"]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Fix:" in err


def test_a_config_change_is_the_runs_settings():
    assert config_overrides('{"analyses": ["fewshot"], "n_workers": 1}') == {
        "analyses": ["fewshot"],
        "n_workers": 1,
    }
    assert config_overrides(None) == {}

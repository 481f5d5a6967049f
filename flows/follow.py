"""Follow a flow run live: its logs, its subflows' and task runs' logs, and its state changes.

    python -m flows.follow FLOW_RUN_ID
    python -m flows.follow --deployment reproduce/quick     # start a run of a deployment, follow it
    python -m flows.follow --deployment reproduce/smoke --config '{"analyses": ["fewshot"]}'

Polls the Prefect API (``PREFECT_API_URL``) every ~2 s and prints each new log line once, as
``HH:MM:SS name | message`` (name: the task run, or the flow for flow-level lines), plus every
state change of the flow run and of its subflow runs (found through their parent task runs,
at any depth). Exits 0 when the flow run ends Completed (last line, as with
``prefect deployment run --watch``: "Flow run finished successfully in 'Completed'."), 1 with a
one-line error on stderr otherwise. Ctrl-C exits 130: a run this command started
(``--deployment``) is cancelled first (:meth:`Follower.cancel`), a run it only follows keeps
running.

Log lines reach the API in batches from several processes (the flow run, Dask workers), so a
line can arrive after later-stamped ones: each poll re-reads a short window (``LOOKBACK_S``)
behind the newest line printed and skips the ids it has already printed. Only ids inside that
window are remembered, and name caches are bounded, so memory stays flat on long runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

POLL_S = 2.0
LOOKBACK_S = 30.0  # how late (by its own timestamp) a log line may reach the API and still show
PAGE = 200  # the server's default maximum page size
MAX_PAGES = 50  # per query and poll: at most 10,000 lines
MAX_SEEN = 50_000  # hard cap on remembered log ids, whatever the window holds
MAX_NAMES = 10_000
API_FAILURES = 15  # consecutive failed polls (~30 s) before giving up on the API
DRAIN_S = 6.0  # after the final state, keep reading lines still in flight for up to this long
WAITING_HINT_S = 60.0
# Ctrl-C: how long to wait for the worker to stop a cancelled run and record it Cancelled
# (it loads the flow for its cancellation hooks first: ~10 s on 2 cores), and how often to look
CANCEL_WAIT_S = 20.0
CANCEL_POLL_S = 0.5
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
WAITING = {"SCHEDULED", "PENDING"}


def _type(state: Any) -> str:
    if state is None:
        return ""
    return str(getattr(state.type, "value", state.type)).upper()


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def one_line(text: str | None, limit: int = 300) -> str:
    """The first non-empty line of ``text``, shortened to ``limit`` characters."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def format_line(timestamp: datetime, name: str, message: str, level: int = logging.INFO) -> str:
    """``HH:MM:SS name | message`` in local time; continuation lines are aligned under the bar."""
    prefix = f"{_utc(timestamp).astimezone():%H:%M:%S} {name} | "
    if level >= logging.WARNING:
        message = f"{logging.getLevelName(level)}: {message}"
    lines = message.splitlines() or [""]
    indent = " " * (len(prefix) - 2) + "| "
    return "\n".join([prefix + lines[0], *(indent + ln for ln in lines[1:])])


class SeenLogs:
    """Which log lines were printed; remembers only ids inside the re-read window."""

    def __init__(self, lookback_s: float = LOOKBACK_S, max_seen: int = MAX_SEEN) -> None:
        self.lookback = timedelta(seconds=lookback_s)
        self.max_seen = max_seen
        self.watermark: datetime | None = None  # newest timestamp printed
        self._seen: OrderedDict[Any, datetime] = OrderedDict()

    def cutoff(self, now: datetime | None = None) -> datetime | None:
        """Read logs stamped at or after this (None: from the beginning)."""
        if self.watermark is None:
            return None
        # a clock ahead of ours must not push the window past lines still to come
        now = now or datetime.now(UTC)
        return min(self.watermark, now) - self.lookback

    def accept(self, logs: Iterable[Any]) -> list[Any]:
        """The logs not printed before, oldest first; marks them printed."""
        new = []
        for log in sorted(logs, key=lambda lg: _utc(lg.timestamp)):
            if log.id in self._seen:
                continue
            ts = _utc(log.timestamp)
            self._seen[log.id] = ts
            new.append(log)
            if self.watermark is None or ts > self.watermark:
                self.watermark = ts
        self._prune()
        return new

    def _prune(self) -> None:
        cutoff = self.cutoff()
        if cutoff is not None:
            for key in [k for k, ts in self._seen.items() if ts < cutoff]:
                del self._seen[key]
        while len(self._seen) > self.max_seen:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


class BoundedNames(OrderedDict):
    """An LRU map id → display name."""

    def __init__(self, limit: int = MAX_NAMES) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: Any, value: str) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


@dataclass
class Event:
    timestamp: datetime
    text: str


class Follower:
    """Polls one flow run (and its subflow runs) through a synchronous Prefect client."""

    def __init__(
        self,
        client: Any,
        flow_run_id: UUID | str,
        write: Callable[[str], None] | None = None,
        *,
        poll_s: float = POLL_S,
        lookback_s: float = LOOKBACK_S,
        level: int = logging.INFO,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.root_id = UUID(str(flow_run_id))
        self.write = write or _print
        self.poll_s = poll_s
        self.level = level
        self.sleep = sleep
        self.clock = clock
        self.seen = SeenLogs(lookback_s)
        self.runs: dict[UUID, Any] = {}  # the root and its subflow runs (latest read)
        self.read_from_start: set[UUID] = set()  # runs whose logs were read from their start
        self.states: dict[UUID, tuple[str, str]] = {}  # last state printed per run
        self.flow_names = BoundedNames()
        self.task_names = BoundedNames()
        self._printed = 0  # lines printed by the last poll

    # -- reading ---------------------------------------------------------------------------------

    def _flow_runs(self) -> dict[UUID, Any]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

        runs = {self.root_id: self.client.read_flow_run(self.root_id)}
        frontier = [self.root_id]
        while frontier:  # children, grandchildren, …
            found: list[Any] = []
            for page in range(MAX_PAGES):
                batch = self.client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)
                    ),
                    limit=PAGE,
                    offset=page * PAGE,
                )
                found += batch
                if len(batch) < PAGE:
                    break
            frontier = [r.id for r in found if r.id not in runs]
            runs.update((r.id, r) for r in found)
        return runs

    def _logs(self, run_ids: list[UUID], after: datetime | None) -> list[Any]:
        from prefect.client.schemas.filters import (
            LogFilter,
            LogFilterFlowRunId,
            LogFilterLevel,
            LogFilterTimestamp,
        )
        from prefect.client.schemas.sorting import LogSort

        if not run_ids:
            return []
        log_filter = LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=run_ids),
            level=LogFilterLevel(ge_=self.level),
            timestamp=LogFilterTimestamp(after_=after) if after else None,
        )
        out: list[Any] = []
        for page in range(MAX_PAGES):
            batch = self.client.read_logs(
                log_filter=log_filter, limit=PAGE, offset=page * PAGE, sort=LogSort.TIMESTAMP_ASC
            )
            out += batch
            if len(batch) < PAGE:
                break
        return out

    def _flow_name(self, run: Any) -> str:
        key = getattr(run, "flow_id", None)
        if key is None:
            return run.name
        if key not in self.flow_names:
            try:
                self.flow_names.put(key, self.client.read_flow(key).name)
            except Exception:  # a name is cosmetic: fall back to the run's own name
                self.flow_names.put(key, run.name)
        return self.flow_names[key]

    def _resolve_task_names(self, logs: list[Any]) -> None:
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

        missing = list({lg.task_run_id for lg in logs if lg.task_run_id} - set(self.task_names))
        for start in range(0, len(missing), PAGE):
            ids = missing[start : start + PAGE]
            try:
                found = self.client.read_task_runs(
                    task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=ids)), limit=PAGE
                )
            except Exception:
                found = []
            for tr in found:
                self.task_names.put(tr.id, tr.name)
            for key in ids:
                if key not in self.task_names:
                    self.task_names.put(key, f"task {str(key)[:8]}")

    def _label(self, log: Any) -> str:
        if log.task_run_id and log.task_run_id in self.task_names:
            return self.task_names[log.task_run_id]
        run = self.runs.get(log.flow_run_id)
        return self._flow_name(run) if run is not None else "flow"

    # -- one poll --------------------------------------------------------------------------------

    def poll(self) -> Any:
        """Print what is new; returns the root flow run as just read."""
        runs = self._flow_runs()
        new_runs = [r for r in runs if r not in self.read_from_start]
        old_runs = [r for r in runs if r in self.read_from_start]
        # a subflow seen for the first time: all its lines, however old (it may have started
        # between two polls, or before this follower did)
        logs = self._logs(old_runs, self.seen.cutoff()) + self._logs(new_runs, None)
        # nothing is marked as printed before every read of this poll has succeeded
        self.runs = runs
        self.read_from_start.update(new_runs)
        events: list[Event] = []
        for run_id, run in runs.items():
            state = run.state
            if state is None:
                continue
            key = (_type(state), state.name or "")
            if self.states.get(run_id) == key:
                continue
            self.states[run_id] = key
            text = state.name or key[0].title()
            if key[0] in FINAL - {"COMPLETED"} and state.message:
                text += f": {one_line(state.message)}"
            line = format_line(state.timestamp, self._flow_name(run), f"[{text}]")
            events.append(Event(_utc(state.timestamp), line))
        fresh = self.seen.accept(logs)
        self._resolve_task_names(fresh)
        for lg in fresh:
            line = format_line(lg.timestamp, self._label(lg), lg.message, lg.level)
            events.append(Event(_utc(lg.timestamp), line))
        for event in sorted(events, key=lambda e: e.timestamp):
            self.write(event.text)
        self._printed = len(events)
        return runs[self.root_id]

    # -- the loop --------------------------------------------------------------------------------

    def run(self, timeout_s: float | None = None) -> int:
        """Follow until the flow run ends; 0 when it Completed, 1 otherwise (error on stderr)."""
        from prefect.exceptions import ObjectNotFound

        start, failures, hinted = self.clock(), 0, False
        while True:
            try:
                root = self.poll()
                failures = 0
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # the API is briefly unreachable or busy: try again
                if isinstance(exc, ObjectNotFound) and not self.runs:
                    return _fail(f"no flow run {self.root_id} on this Prefect API")
                failures += 1
                if failures >= API_FAILURES:
                    return _fail(
                        f"lost the Prefect API after {failures} tries: {one_line(str(exc)) or type(exc).__name__}"
                    )
                self.sleep(self.poll_s)
                continue
            kind = _type(root.state)
            if kind in FINAL:
                self._drain()
                if kind == "COMPLETED":
                    # the wording of `prefect deployment run --watch`, which scripts may look for
                    self.write(f"Flow run finished successfully in {root.state.name!r}.")
                    return 0
                msg = one_line(root.state.message) or "no message"
                return _fail(f"flow run '{root.name}' ended {root.state.name}: {msg}")
            waited = self.clock() - start
            if kind in WAITING and not hinted and waited > WAITING_HINT_S:
                hinted = True
                self.write(
                    f"follow: flow run '{root.name}' still {root.state.name} after "
                    f"{waited:.0f} s: is a worker polling its work pool?"
                )
            if timeout_s is not None and waited > timeout_s:
                return _fail(
                    f"flow run '{root.name}' still {root.state.name} after {timeout_s:.0f} s (it keeps running)"
                )
            self.sleep(self.poll_s)

    def cancel(self, wait_s: float = CANCEL_WAIT_S) -> int:
        """Ctrl-C on a run this command started: cancel it through the API, wait (at most
        ``wait_s``; a second Ctrl-C stops waiting) for its worker to stop it and record it
        Cancelled, say so, and return 130 (the shell's code for Ctrl-C). Finished work is
        kept on disk, so running the deployment again resumes."""
        from prefect.states import Cancelling

        run, deadline = None, self.clock() + wait_s
        try:
            self.client.set_flow_run_state(self.root_id, Cancelling(message="Ctrl-C"))
            print(
                f"\nfollow: cancelling flow run {self.root_id}; waiting for its worker to stop "
                "it (Ctrl-C again to stop waiting)",
                file=sys.stderr,
                flush=True,
            )
            while self.clock() < deadline:
                run = self.client.read_flow_run(self.root_id)
                if _type(run.state) in FINAL:
                    break
                self.sleep(CANCEL_POLL_S)
        except KeyboardInterrupt:
            pass
        which = f"'{run.name}' {run.state.name}" if run else str(self.root_id)
        print(
            f"interrupted: flow run {which}; run the deployment again to resume (finished "
            "work is reused)",
            file=sys.stderr,
            flush=True,
        )
        return 130

    def _drain(self) -> None:
        """Lines sent just before the end can reach the API a moment after the final state."""
        deadline, quiet = self.clock() + DRAIN_S, 0
        while quiet < 2 and self.clock() < deadline:
            self.sleep(min(1.0, self.poll_s))
            try:
                self.poll()
            except Exception:
                return
            quiet = quiet + 1 if self._printed == 0 else 0


def _print(text: str) -> None:
    print(text, flush=True)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 1


def config_overrides(text: str | None) -> dict[str, Any]:
    """The run's changes to the deployment's ``config`` parameter, from a JSON object, checked
    against :class:`~lineargan.config.RunConfig` here, before a run exists (a mistake is one
    line, not a flow run that fails on its worker)."""
    if not text:
        return {}
    from pydantic import ValidationError

    from lineargan.config import RunConfig
    from lineargan.errors import LinearGanError
    from tasks.analyses.registry import resolve_analyses

    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LinearGanError(
            f"--config is not valid JSON ({exc})",
            """write a JSON object in single quotes, e.g. '{"analyses": ["fewshot"]}'""",
        ) from None
    if not isinstance(overrides, dict):
        raise LinearGanError(
            f"--config must be a JSON object of run settings, not {type(overrides).__name__}",
            """write e.g. '{"analyses": ["fewshot"]}'""",
        )
    if "profile" in overrides:
        raise LinearGanError(
            "--config cannot change the profile: the deployment names it",
            "start the deployment of that profile (reproduce/smoke, reproduce/quick, ...)",
        )
    try:
        resolve_analyses(RunConfig.model_validate(overrides))  # names and their parameters
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise LinearGanError(
            f"--config sets {loc or 'the config'} wrongly: {first['msg']}",
            "see `python -m flows.reproduce --help` for the run settings and their values",
        ) from None
    return overrides


def start_deployment(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """Create a flow run of deployment ``name`` (``flow/deployment``) and return it at once;
    ``overrides`` update the deployment's ``config`` parameter for this run only."""
    from prefect.deployments import run_deployment

    parameters = None
    if overrides:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
        parameters = {"config": {**deployment.parameters.get("config", {}), **overrides}}
    return run_deployment(name, parameters=parameters, timeout=0, as_subflow=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.follow", description=__doc__.split("\n")[0]
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("flow_run_id", nargs="?", help="the flow run to follow")
    which.add_argument(
        "--deployment", help="start a run of this deployment (flow/deployment) and follow it"
    )
    parser.add_argument(
        "--config",
        help="JSON object of run settings that update the deployment's config for this run "
        "(with --deployment)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check --config and exit (0 when it is valid, 2 with one line otherwise)",
    )
    parser.add_argument(
        "--poll", type=float, default=POLL_S, help="seconds between polls (default 2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up after this many seconds"
    )
    parser.add_argument("--level", default="INFO", help="lowest log level shown (default INFO)")
    args = parser.parse_args(argv)
    level = logging.getLevelName(args.level.upper())
    if not isinstance(level, int):
        parser.error(f"unknown log level {args.level!r}")
    if args.config and not args.deployment:
        parser.error("--config needs --deployment (it changes the run that command starts)")
    from lineargan.errors import LinearGanError

    try:
        overrides = config_overrides(args.config)
    except LinearGanError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.check:
        return 0

    from prefect.client.orchestration import get_client

    run_id = None
    try:
        if args.deployment:
            run = start_deployment(args.deployment, overrides)
            run_id = run.id
            print(
                f"follow: started flow run '{run.name}' ({run.id}) of deployment {args.deployment}",
                flush=True,
            )
        else:
            try:
                run_id = UUID(args.flow_run_id)
            except ValueError:
                return _fail(f"{args.flow_run_id!r} is not a flow run id (a UUID)")
        with get_client(sync_client=True) as client:
            return Follower(client, run_id, poll_s=args.poll, level=level).run(args.timeout)
    except KeyboardInterrupt:
        if args.deployment and run_id is not None:  # the run this command started: stop it
            try:
                with get_client(sync_client=True) as client:
                    return Follower(client, run_id).cancel()
            except Exception as exc:  # the API is gone: nothing more to do here
                return _fail(f"could not cancel flow run {run_id}: {one_line(str(exc)) or exc!r}")
        print("\nfollow: interrupted; the flow run keeps running on its worker", file=sys.stderr)
        return 130
    except Exception as exc:
        return _fail(f"cannot follow the flow run: {type(exc).__name__}: {one_line(str(exc))}")


if __name__ == "__main__":
    sys.exit(main())

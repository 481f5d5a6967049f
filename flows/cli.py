"""Command lines: generated from the pydantic configs, with user errors as one line.

``python -m flows.reproduce`` and ``python -m flows.cache`` take one flag per field of
:class:`~lineargan.config.RunConfig` / :class:`~lineargan.config.DatasetConfig` (pydantic-
settings builds them, so a new field is a new flag and nothing can drift), validated exactly as
a deployment's parameters are. ``lineargan`` (this module's :func:`main`) queries results:

lineargan render NAME|all [--profile quick] [--results-root DIR]
    print a paper table of the newest run, rendered from its Parquet files alone
lineargan table NAME [--results-root DIR]                  print any result table
lineargan compare RESULTS_A RESULTS_B                      every measured number of two runs
                                                           (times, run ids, paths left out)
lineargan verify STORE_URL [--repair]                      check every finished chunk: all
                                                           objects present, CRC32C intact
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import pandas as pd
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict, SettingsError

from flows.interrupt import exit_interrupted, interrupted_line, stop_runs_on_interrupt
from lineargan.errors import LinearGanError
from lineargan.paths import default_results_root

M = TypeVar("M", bound=BaseModel)


def settings_cli(model: type[M], prog: str, description: str) -> type[BaseSettings]:
    """A pydantic-settings command line with one ``--kebab-case`` flag per field of ``model``.

    Only the command line is read (no environment variables: a stray ``DEVICE`` in a user's
    shell must not change a run).
    """

    class Command(model, BaseSettings):  # type: ignore[misc, valid-type]
        model_config = SettingsConfigDict(
            cli_prog_name=prog,
            cli_kebab_case=True,
            cli_implicit_flags=True,
            cli_use_class_docs_for_groups=False,
            cli_exit_on_error=False,  # parse errors become one line (parse_config), no usage dump
            extra="forbid",
            frozen=False,
        )

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **_: Any):
            return (init_settings,)

    Command.__doc__ = description
    Command.__name__ = f"{model.__name__}Command"
    return Command


def parse_config(model: type[M], argv: list[str] | None, prog: str, description: str, **extra):
    """Parse ``argv`` into a validated ``model`` (flags from its fields; ``extra`` adds fields
    of the command itself, as ``name=(type, default)``); returns (config, extra values)."""
    command = settings_cli(model, prog, description)
    if extra:
        from pydantic import create_model

        command = create_model(command.__name__, __base__=command, __doc__=description, **extra)
    try:
        parsed = CliApp.run(command, cli_args=sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        raise command_line_error(exc, command, prog) from None
    values = parsed.model_dump()
    own = {k: values.pop(k) for k in extra}
    return model(**values), own


# pydantic-settings' words for a flag value it could not decode, naming the field.
_BAD_VALUE = (
    re.compile(r"Parsing error encountered for (\w+): (.*)"),
    re.compile(r'error parsing value for field "(\w+)" from source'),
)


def _json_example(annotation: Any) -> str:
    """A JSON value of the right shape for a field's type: a list for sequences, else an object."""
    if get_origin(annotation) in (Union, UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return (
        """'["a", "b"]'""" if get_origin(annotation) in (list, tuple, set) else """'{"key": 1}'"""
    )


def command_line_error(exc: SettingsError, command: type[BaseModel], prog: str) -> LinearGanError:
    """pydantic-settings' error for a command line it cannot parse (a malformed JSON value, an
    unknown flag, a flag without its value), as one line naming the flag and the fix."""
    message = str(exc).removeprefix("error parsing CLI: ")
    for pattern in _BAD_VALUE:
        found = pattern.match(message)
        if found and found.group(1) in command.model_fields:
            field = found.group(1)
            flag = "--" + field.replace("_", "-")
            cause = found.group(2) if found.lastindex == 2 else str(exc.__cause__ or message)
            example = _json_example(command.model_fields[field].annotation)
            return LinearGanError(
                f"{flag} is not valid JSON ({cause.splitlines()[0]})",
                f"write its value as JSON in single quotes, e.g. {flag} {example}",
            )
    return LinearGanError(
        f"cannot read the command line: {message}",
        f"run `{prog} --help` for the flags and what each takes",
    )


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        nxt = seen.__cause__ or seen.__context__
        if isinstance(seen, LinearGanError | ValidationError):
            break
        seen = nxt
    return seen


def run_cli(fn: Callable[[], None]) -> None:
    """Run ``fn``; a user error (anywhere, also wrapped by Prefect) becomes one line, exit 2;
    Ctrl-C one line saying what finished and how to resume, exit 130 (see flows.interrupt)."""
    stop_runs_on_interrupt()
    try:
        fn()
    except KeyboardInterrupt:
        print(interrupted_line(), file=sys.stderr)
        exit_interrupted()
    except (LinearGanError, ValidationError) as exc:
        _fail(exc)
    except Exception as exc:  # Prefect may wrap the task's error: unwrap user errors
        cause = _root_cause(exc)
        if isinstance(cause, LinearGanError | ValidationError):
            _fail(cause)
        raise


def _fail(exc: BaseException) -> None:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = f"invalid parameter {loc}: {first['msg']}. Fix: pass a valid value (see --help)"
    else:
        msg = str(exc)
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


# -- the `lineargan` query command ----------------------------------------------------------


def _cmd_render(args: argparse.Namespace) -> None:
    from tasks.render import paper_tables, render

    root = args.results_root or default_results_root()
    names = list(paper_tables()) if args.name == "all" else [args.name]
    for name in names:
        try:
            print(render(name, root, args.profile))
        except LinearGanError as exc:
            if args.name != "all":
                raise
            print(f"({name}: {exc.problem})\n")
    print(
        f"files:\n  tables   {root}/tables/  (pd.read_parquet('{root}/tables/<table>'); "
        f"index: results_index)\n  figures  {root}/figures/\n  reports  {root}/reports/\n"
        f"  fits     {root}/fits/"
    )


def _cmd_table(args: argparse.Namespace) -> None:
    from storage.results import load_table

    with pd.option_context("display.max_rows", 200, "display.width", 200):
        print(load_table(args.name, args.results_root))


def _cmd_verify(args: argparse.Namespace) -> None:
    from storage.feature_store import FeatureStore
    from storage.target import Target

    store = FeatureStore.open(Target(args.store))
    bad = store.verify(repair=args.repair)
    if not bad:
        print(
            f"{args.store}: all {int(store.done_mask().sum())} finished chunks are present and "
            "pass their checksums"
        )
        return
    action = (
        "marked for recomputation (rerun the cache flow)" if args.repair else "rerun with --repair"
    )
    print(f"{args.store}: damaged chunks (missing or corrupt objects) {bad}; {action}")
    if not args.repair:
        sys.exit(1)


def _cmd_compare(args: argparse.Namespace) -> None:
    from storage.results import compare_results

    verdicts = compare_results(args.results_a, args.results_b)
    if not verdicts:
        raise LinearGanError(
            f"no result tables under {args.results_a}", "pass the results root of a finished run"
        )
    for name, verdict in verdicts.items():
        print(f"{name}: {verdict}")
    differ = [name for name, verdict in verdicts.items() if verdict != "same"]
    print(f"{len(verdicts) - len(differ)} of {len(verdicts)} tables identical")
    if differ:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    from tasks.render import paper_tables

    parser = argparse.ArgumentParser(
        prog="lineargan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("render", help="print a paper table of the newest run from Parquet")
    p.add_argument("name", help=f"{', '.join(paper_tables())} or all")
    p.add_argument("--profile", default=None)
    p.add_argument("--results-root", default=None)
    p.set_defaults(fn=_cmd_render)
    p = sub.add_parser("table", help="print a result table")
    p.add_argument("name")
    p.add_argument("--results-root", default=None)
    p.set_defaults(fn=_cmd_table)
    p = sub.add_parser("verify", help="check that a store's finished chunks are present and intact")
    p.add_argument("store")
    p.add_argument("--repair", action="store_true")
    p.set_defaults(fn=_cmd_verify)
    p = sub.add_parser(
        "compare", help="compare every measured number of two runs' tables (exit 1 if any differs)"
    )
    p.add_argument("results_a")
    p.add_argument("results_b")
    p.set_defaults(fn=_cmd_compare)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except (LinearGanError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

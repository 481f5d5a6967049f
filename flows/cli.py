"""Shared command-line behaviour: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pydantic import ValidationError

from lineargan.errors import LinearGanError


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        nxt = seen.__cause__ or seen.__context__
        if isinstance(seen, LinearGanError | ValidationError):
            break
        seen = nxt
    return seen


def run_cli(fn: Callable[[], None]) -> None:
    try:
        fn()
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

"""User-facing errors.

Every error a user can cause (bad name, bad checkpoint, foreign store, bad config, unwritable
output) is a ``LinearGanError`` whose message is one line naming the problem *and* the fix, so
the CLI can print it without a traceback and exit non-zero.
"""

from __future__ import annotations


class LinearGanError(Exception):
    """Base class: ``str(err)`` is ``"<problem>. Fix: <fix>"`` on one line."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}. Fix: {fix}")


class UnknownNameError(LinearGanError):
    """A model, extractor or profile name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        super().__init__(f"unknown {kind} {name!r}", f"use one of: {', '.join(sorted(known))}")


class CheckpointError(LinearGanError):
    """A weights file whose hash or keys do not match the architecture it is loaded into."""


class FingerprintMismatchError(LinearGanError):
    """A store that was written by another model, seed, size or format."""


class CorruptChunkError(LinearGanError):
    """A stored chunk whose checksum does not match its bytes."""


class OutputNotWritableError(LinearGanError):
    """An output location that cannot be created or written."""


class StoreIncompleteError(LinearGanError):
    """A store that is read before all of its chunks were written."""

"""A storage root addressed by local path or fsspec URL (``file://``, ``memory://``, ``s3://`` …).

Stores, tables, fits and figures are always reached through a :class:`Target`, so the same flow
writes to a local disk in tests and to object storage in a cluster. Remote filesystems need
their fsspec backend (``s3fs`` for ``s3://``, the ``s3`` extra); a missing one is a one-line
error saying what to install, not a raw ImportError from deep inside a task.
"""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass

import fsspec
from fsspec.core import url_to_fs

from lineargan.errors import LinearGanError, OutputNotWritableError

# Backends whose single PUT of a whole object is atomic: a reader sees the old object or the
# new one, never half of it, so the temporary-name-and-rename dance (copy + delete there) is
# pure overhead.
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"}

# What to install for the backends users are likely to name (fsspec's own hint otherwise).
_EXTRAS = {"s3": "s3", "s3a": "s3"}

# How a pre-flight probe opens a backend so that it gives up within seconds: a fresh client
# (no cached one with the run's retry policy), one attempt, short socket timeouts. Without
# them, missing credentials or an unreachable endpoint surface after botocore's and s3fs's
# retries, half a minute later, deep inside a task.
_S3_PROBE = {
    "skip_instance_cache": True,
    "config_kwargs": {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 1}},
}
_PROBE_OPTIONS: dict[str, dict] = {"s3": _S3_PROBE, "s3a": _S3_PROBE}
# Error class names (anywhere in the exception's MRO) and what to do about them; matched by
# name so this module needs no botocore import.
_REMOTE_FIXES: tuple[tuple[frozenset[str], str], ...] = (
    (
        frozenset({"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}),
        "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) where the flow and "
        "its Dask workers start, and AWS_ENDPOINT_URL for a non-AWS S3 server",
    ),
    (
        frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"}),
        "check that the object store is reachable from here (AWS_ENDPOINT_URL, network, proxy)",
    ),
)


class MissingBackendError(LinearGanError):
    """An fsspec URL whose filesystem package is not installed."""


@dataclass(frozen=True)
class Target:
    """A root URL plus helpers to join, test and open paths below it."""

    url: str

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0] if "://" in self.url else "file"

    def _resolve(self, **options) -> tuple[fsspec.AbstractFileSystem, str]:
        protocol = self.protocol
        try:
            return url_to_fs(self.url, **options)
        except ValueError as exc:
            if not str(exc).startswith("Protocol not known"):
                raise
            raise MissingBackendError(
                f"cannot open {self.url}: fsspec knows no filesystem for {protocol}://",
                "use a local path or an fsspec URL such as s3://bucket/path or memory://name",
            ) from exc
        except ImportError as exc:
            extra = _EXTRAS.get(protocol)
            fix = (
                f"pip install 'lineargan[{extra}]' (bash scripts/setup.sh installs it)"
                if extra
                else f"install the fsspec backend for {protocol}:// ({exc})"
            )
            raise MissingBackendError(
                f"cannot open {self.url}: no filesystem package for {protocol}:// is installed",
                fix,
            ) from exc

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._resolve()[0]

    @property
    def path(self) -> str:
        """The root as the filesystem sees it (protocol stripped)."""
        return self._resolve()[1]

    @property
    def is_local(self) -> bool:
        return "://" not in self.url or self.url.startswith("file://")

    @property
    def location(self) -> str:
        """What to record and reopen: the absolute path for a local target (as local tools
        expect), the URL otherwise (a bare bucket path would lose its protocol)."""
        return self.path if self.is_local else self.url

    def __truediv__(self, part: str) -> Target:
        return Target(posixpath.join(self.url.rstrip("/"), part))

    def exists(self) -> bool:
        fs, path = self.fs, self.path
        # Another process (a Dask worker) may have written it since this process last listed
        # the parent: never answer from a cached listing.
        fs.invalidate_cache(path)
        return fs.exists(path)

    def require_backend(self) -> None:
        """Fail early, with the install hint, when this URL's filesystem is not installed."""
        self._resolve()

    def require_local(self, what: str) -> None:
        """Refuse a remote URL where the caller can only work with local file APIs."""
        if not self.is_local:
            raise OutputNotWritableError(
                f"{what} {self.url} is not a local directory",
                f"pass a local path as {what}",
            )

    def ensure_writable(self, *, quick: bool = False) -> None:
        """Create the root and prove a file can be written there, before any real work.

        ``quick`` (the command lines' pre-flight) probes an object store through a client that
        gives up within seconds instead of retrying for half a minute, so missing credentials or
        an unreachable endpoint are one line before any server or cluster starts.
        """
        options = _PROBE_OPTIONS.get(self.protocol, {}) if quick else {}
        fs, path = self._resolve(**options)
        if options:
            fs.retries = 1  # s3fs's own retry loop, on top of botocore's
        probe = posixpath.join(path, f".write-probe-{uuid.uuid4().hex}")
        try:
            fs.makedirs(path, exist_ok=True)
            with fs.open(probe, "wb") as fh:
                fh.write(b"ok")
            fs.rm(probe)
        except Exception as exc:  # noqa: BLE001 - remote backends raise their own classes
            if not isinstance(exc, OSError) and self.is_local:
                raise
            raise OutputNotWritableError(
                f"cannot write to {self.url} ({type(exc).__name__}: {exc})".replace("\n", " "),
                _remote_fix(exc)
                or "pass a directory or URL you can write to (data_root / results_root)",
            ) from exc

    def write_bytes_atomic(self, data: bytes) -> None:
        """Write so that a killed run never leaves half a file: via a temporary sibling and a
        rename, or in one PUT on object stores (atomic there; their rename is copy + delete)."""
        fs, path = self.fs, self.path
        if self.url.split("://", 1)[0] in _ATOMIC_PUT:
            fs.pipe_file(path, data)
            return
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with fs.open(tmp, "wb") as fh:
            fh.write(data)
        fs.mv(tmp, path)

    def read_bytes(self) -> bytes:
        with self.fs.open(self.path, "rb") as fh:
            return fh.read()

    def remove_tree(self) -> None:
        """Delete this path and everything below it; nothing there is fine."""
        if self.exists():
            self.fs.rm(self.path, recursive=True)


def _remote_fix(exc: BaseException) -> str | None:
    """What to do about an object store's error, when it is one we know (else None)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return next((fix for known, fix in _REMOTE_FIXES if names & known), None)

"""A storage root addressed by local path or fsspec URL (``file://``, ``memory://``, ``s3://`` …).

Stores and tables are always reached through a :class:`Target`, so the same flow writes to a
local disk in tests and to object storage in a cluster.
"""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass

import fsspec
from fsspec.core import url_to_fs

from lineargan.errors import OutputNotWritableError


@dataclass(frozen=True)
class Target:
    """A root URL plus helpers to join, test and open paths below it."""

    url: str

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return url_to_fs(self.url)[0]

    @property
    def path(self) -> str:
        """The root as the filesystem sees it (protocol stripped)."""
        return url_to_fs(self.url)[1]

    @property
    def is_local(self) -> bool:
        return "://" not in self.url or self.url.startswith("file://")

    def __truediv__(self, part: str) -> Target:
        return Target(posixpath.join(self.url.rstrip("/"), part))

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def require_local(self, what: str) -> None:
        """Refuse a remote URL where the code writes with local file APIs."""
        if not self.is_local:
            raise OutputNotWritableError(
                f"{what} {self.url} is not a local directory (extractor checkpoints are written "
                "with local file APIs)",
                f"pass a local path as {what}; data_root may be any fsspec URL",
            )

    def ensure_writable(self) -> None:
        """Create the root and prove a file can be written there, before any real work."""
        fs, path = self.fs, self.path
        probe = posixpath.join(path, f".write-probe-{uuid.uuid4().hex}")
        try:
            fs.makedirs(path, exist_ok=True)
            with fs.open(probe, "wb") as fh:
                fh.write(b"ok")
            fs.rm(probe)
        except (OSError, PermissionError) as exc:
            raise OutputNotWritableError(
                f"cannot write to {self.url} ({type(exc).__name__}: {exc})",
                "pass a directory or URL you can write to (data_root / results_root)",
            ) from exc

    def write_bytes_atomic(self, data: bytes) -> None:
        """Write via a temporary sibling and rename, so a killed run never leaves half a file."""
        fs, path = self.fs, self.path
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with fs.open(tmp, "wb") as fh:
            fh.write(data)
        fs.mv(tmp, path)

    def read_bytes(self) -> bytes:
        with self.fs.open(self.path, "rb") as fh:
            return fh.read()

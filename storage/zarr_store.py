"""The Zarr store under a feature store: a missing chunk object is an error, never zeros.

Zarr reads an absent chunk object as the array's fill value, which is how it represents chunks
that were never written. A feature store writes every chunk of every array before it marks
the chunk done, so an absent object there means lost data (a deleted file, a lifecycle rule on
a bucket, a half-copied store), and reading it as zeros would silently train and evaluate on
all-background labels and zero features. :class:`StrictChunkStore` turns that absence into
:class:`MissingChunkObject`, which the feature store reports like a failed checksum.

Only ``chunk_done`` may legitimately lack chunk objects (an element that was never set is 0,
"not done"), so it is the one array read with the fill-value semantics.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore, LocalStore, WrapperStore

# arrays whose unwritten chunks read as their fill value by design
_SPARSE_ARRAYS = ("chunk_done",)


class MissingChunkObject(KeyError):
    """A chunk object of a data array that is not in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _is_chunk_key(key: str) -> bool:
    # Zarr v3 default chunk key encoding: "<array path>/c/<i>/<j>/..." (metadata: "zarr.json")
    head, sep, _ = key.partition("/c/")
    return bool(sep) and head not in _SPARSE_ARRAYS


class StrictChunkStore(WrapperStore[Store]):
    """A Zarr store that raises :class:`MissingChunkObject` for an absent data chunk."""

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        value = await self._store.get(key, prototype, byte_range)
        if value is None and _is_chunk_key(key):
            raise MissingChunkObject(key)
        return value

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        values = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), value in zip(key_ranges, values, strict=True):
            if value is None and _is_chunk_key(key):
                raise MissingChunkObject(key)
        return values

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)


def strict_store(url: str, *, read_only: bool = False) -> StrictChunkStore:
    """The store at ``url`` (a local path or an fsspec URL, as zarr itself would open it),
    wrapped so that missing data chunks raise."""
    if "://" in url and not url.startswith("file://"):
        base: Store = FsspecStore.from_url(url, read_only=read_only)
    else:
        base = LocalStore(url.removeprefix("file://"), read_only=read_only)
    return StrictChunkStore(base)

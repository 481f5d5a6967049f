"""The Zarr feature/label store: one per dataset (generator, segmenter, split, seed, N).

Layout (Zarr v3 group)::

    latents              (N, latent_dim)        float32
    images               (N, H, W, 3)           uint8
    labels               (N, H, W)              uint8    segmenter classes, 0 = background
    detected             (N,)                   bool     segmenter's own detector fired
    features/<layer>     (N, c, h, w)           float16  one array per generator layer
    chunk_done           (n_chunks,)            uint8    1 once *every* array of chunk i is written

All arrays are chunked along the sample axis with the same chunk size, compressed with Blosc
zstd (byte shuffle) and sealed with a CRC32C checksum, so a damaged chunk is detected on read.
The group attributes carry the fingerprint; opening a store with a different fingerprint is an
error, never a silent mix. Chunk i covers samples [i·B, (i+1)·B): a retried chunk overwrites
its own region and never appends, so writes are idempotent and resumable (``chunk_done`` is
written last and has one Zarr chunk per element, so parallel writers never touch one file).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from lineargan.cache import SampleBatch
from lineargan.errors import CorruptChunkError, FingerprintMismatchError, StoreIncompleteError
from storage.spec import (  # noqa: F401 - re-exported: the store API names them
    FORMAT_VERSION,
    SAME_MODEL_FIELDS,
    StoreSpec,
    _describe,
    check_same_models,
)
from storage.target import Target
from storage.zarr_store import MissingChunkObject, strict_store


def _compressors(itemsize: int) -> list:
    shuffle = "shuffle" if itemsize > 1 else "noshuffle"
    # zstd level 1: float16 features compress as well as at level 3 (2.42× vs 2.40×, measured
    # by benchmarks/bench_pipeline.py) for less than half the CPU time.
    return [BloscCodec(cname="zstd", clevel=1, shuffle=shuffle), Crc32cCodec()]


# Every chunk is written once and is never all zeros in practice: skip zarr's byte-by-byte
# "is this chunk empty?" scan before each write.
_ARRAY_CONFIG = {"write_empty_chunks": True}


class FeatureStore:
    """Read/write access to one dataset's Zarr store. Construct with :meth:`create` or :meth:`open`."""

    def __init__(self, target: Target, group: zarr.Group, spec: StoreSpec) -> None:
        self.target = target
        self.group = group
        self.spec = spec

    # -- creation and opening -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        target: Target,
        spec: StoreSpec,
        latents: Iterable[np.ndarray],
        extra_attrs: dict | None = None,
    ) -> FeatureStore:
        """Create the store (metadata + latents), or reopen it if it holds the same fingerprint.

        Reopening never clears finished chunks: that is what makes a rerun resume; it
        rewrites the latents of unfinished chunks whose latents were lost or damaged (they are
        the chunk's only input, so the cache stage could not recompute it otherwise).
        ``latents`` yields one (chunk_size, latent_dim) block per chunk, in order, and is
        consumed only as far as needed.
        """
        if cls.exists(target):  # a creation killed before its fingerprint landed starts over
            store = cls.open_matching(target, spec)
            store._restore_latents(latents)
            return store
        group = zarr.open_group(strict_store(target.url), mode="w")
        group.attrs.update({"lineargan_state": "creating"})
        b, n, r = spec.chunk_size, spec.n, spec.resolution

        def array(name: str, shape: tuple, dtype: str, chunks: tuple | None = None) -> zarr.Array:
            return group.create_array(
                name,
                shape=shape,
                chunks=chunks or (b,) + shape[1:],
                dtype=dtype,
                compressors=_compressors(np.dtype(dtype).itemsize),
                fill_value=0,
                config=_ARRAY_CONFIG,
            )

        z_array = array("latents", (n, spec.latent_dim), "float32")
        written = 0
        for i, block in enumerate(latents):
            sl = spec.chunk_slice(i)
            if block.shape != (sl.stop - sl.start, spec.latent_dim):
                raise ValueError(
                    f"latent block {i} has shape {block.shape}, chunk needs {(sl.stop - sl.start, spec.latent_dim)}"
                )
            z_array[sl] = block.astype(np.float32)
            written = sl.stop
        if written != n:
            raise ValueError(f"latents cover {written} samples, store needs {n}")
        array("images", (n, r, r, 3), "uint8")
        array("labels", (n, r, r), "uint8")
        array("detected", (n,), "bool")
        feats = group.create_group("features")
        for name, shape in zip(spec.layer_names, spec.layer_shapes, strict=True):
            if spec.regenerates:
                break
            feats.create_array(
                name,
                shape=(n, *shape),
                chunks=(b, *shape),
                dtype="float16",
                compressors=_compressors(2),
                fill_value=0,
                config=_ARRAY_CONFIG,
            )
        array("chunk_done", (spec.n_chunks,), "uint8", chunks=(1,))
        # The fingerprint goes in last: a group without it is an interrupted creation.
        group.attrs.update(
            {
                **(extra_attrs or {}),
                "fingerprint": spec.fingerprint(),
                "complete": False,
                "lineargan_state": "created",
            }
        )
        return cls(target, group, spec)

    @staticmethod
    def exists(target: Target) -> bool:
        """Whether a store was created at ``target`` (a creation killed before its fingerprint
        landed does not count: :meth:`create` starts it over)."""
        return _has_group(target) and not _is_half_created(target)

    @classmethod
    def open_matching(cls, target: Target, spec: StoreSpec) -> FeatureStore:
        """The existing store at ``target``, refused unless it was made for ``spec`` (the
        path does not hold every field of the fingerprint, e.g. the weights' hash)."""
        store = cls.open(target)
        if store.spec.fingerprint() != spec.fingerprint():
            raise FingerprintMismatchError(
                f"store {target.url} was made for a different dataset ({_describe(spec.fingerprint(), store.spec.fingerprint())})",
                "use another data_root, or delete that store if it is no longer needed",
            )
        return store

    @classmethod
    def open(cls, target: Target, *, require_complete: bool = False) -> FeatureStore:
        if not _has_group(target):
            raise StoreIncompleteError(
                f"no feature store at {target.url}", "run the cache flow for this dataset first"
            )
        group = zarr.open_group(strict_store(target.url), mode="r+")
        attrs = group.attrs.asdict()
        if "fingerprint" not in attrs:
            raise FingerprintMismatchError(
                f"{target.url} is not a lineargan feature store (no fingerprint)",
                "point data_root elsewhere or delete that directory",
            )
        if attrs["fingerprint"].get("format_version") != FORMAT_VERSION:
            raise FingerprintMismatchError(
                f"store {target.url} has format version {attrs['fingerprint'].get('format_version')}, this code reads {FORMAT_VERSION}",
                "rebuild the store with the cache flow (delete the old one first)",
            )
        store = cls(target, group, StoreSpec.from_fingerprint(attrs["fingerprint"]))
        if require_complete and not attrs.get("complete", False):
            missing = len(store.pending_chunks())
            raise StoreIncompleteError(
                f"store {target.url} is incomplete ({missing} of {store.spec.n_chunks} chunks missing)",
                "rerun the cache flow with the same parameters; it resumes where it stopped",
            )
        return store

    # -- chunk bookkeeping -----------------------------------------------------------------
    def done_mask(self) -> np.ndarray:
        return np.asarray(self.group["chunk_done"][:], dtype=bool)

    def pending_chunks(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.done_mask())]

    def is_done(self, i: int) -> bool:
        return bool(self.group["chunk_done"][i])

    @property
    def complete(self) -> bool:
        return bool(self.group.attrs.get("complete", False))

    # -- writes ------------------------------------------------------------------------------
    def write_chunk(self, i: int, data: SampleBatch) -> None:
        """Write every array of chunk ``i``, then mark it done (the commit point)."""
        sl = self.spec.chunk_slice(i)
        g = self.group
        g["images"][sl] = data.images
        g["labels"][sl] = data.labels
        g["detected"][sl] = data.detected
        if not self.spec.regenerates:
            for name, feat in zip(self.spec.layer_names, data.features, strict=True):
                g["features"][name][sl] = feat.astype(np.float16, copy=False)
        g["chunk_done"][i] = 1

    def _restore_latents(self, latents: Iterable[np.ndarray]) -> None:
        damaged = []
        for i in self.pending_chunks():
            try:
                self.read_latents(self.spec.chunk_slice(i))
            except CorruptChunkError:
                damaged.append(i)
        if not damaged:
            return
        for i, block in enumerate(latents):
            if i in damaged:
                self.group["latents"][self.spec.chunk_slice(i)] = block.astype(np.float32)
            if i >= damaged[-1]:
                break

    def invalidate_chunk(self, i: int) -> None:
        """Mark chunk ``i`` for recomputation (used after a checksum failure)."""
        self.group["chunk_done"][i] = 0
        if self.complete:
            self.group.attrs.update({"complete": False})

    def n_detected(self) -> int:
        """How many images the segmenter's own detector labelled (the rest used its fallback)."""
        return int(self.detected_flags().sum())

    def finalize(self) -> dict:
        """Mark the store complete once every chunk is done, with summary statistics."""
        pending = self.pending_chunks()
        if pending:
            raise StoreIncompleteError(
                f"store {self.target.url} still misses chunks {pending[:5]}",
                "rerun the cache flow with the same parameters",
            )
        detected = self.detected_flags()
        stats = {
            "complete": True,
            "fallback_rate": float(1.0 - detected.mean()) if detected.size else 0.0,
        }
        self.group.attrs.update(stats)
        with warnings.catch_warnings():  # "consolidated metadata is not in the v3 spec" (known)
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(self.target.url)
        return stats

    # -- reads ---------------------------------------------------------------------------------
    def read_latents(self, sl: slice) -> np.ndarray:
        return self._read("latents", self.group["latents"], sl)

    def read_chunk(self, i: int, *, features: bool = True, images: bool = False) -> SampleBatch:
        """Read chunk ``i``; a checksum failure raises :class:`CorruptChunkError` naming the chunk."""
        sl = self.spec.chunk_slice(i)
        g = self.group
        latents = self._read("latents", g["latents"], sl)
        if not features:
            feats = []
        elif self.spec.regenerates:
            feats = self._regenerated_features(latents)
        else:
            feats = [
                self._read(f"features/{n}", g["features"][n], sl) for n in self.spec.layer_names
            ]
        return SampleBatch(
            latents=latents,
            images=self._read("images", g["images"], sl) if images else np.empty(0, np.uint8),
            labels=self._read("labels", g["labels"], sl),
            detected=self._read("detected", g["detected"], sl),
            features=feats,
        )

    def _regenerated_features(self, latents: np.ndarray) -> list[np.ndarray]:
        """A regenerate-policy store holds no features: running its generator is pipeline
        work (``tasks.feature_source.FeatureSource`` overrides this), never the storage's."""
        raise TypeError(
            f"store {self.target.url} regenerates its features instead of storing them; read "
            "features through tasks.feature_source.FeatureSource, which runs its generator"
        )

    def _read(self, name: str, arr: zarr.Array, sl: slice) -> np.ndarray:
        """``arr[sl]``, with a damaged chunk (bad checksum, or its object missing, which zarr
        alone would read as zeros) raised as :class:`CorruptChunkError`."""
        try:
            return np.asarray(arr[sl])
        except MissingChunkObject as exc:
            problem = f"has no chunk object {exc.key!r} (deleted or lost)"
            cause: Exception = exc
        except ValueError as exc:
            if "checksum" not in str(exc).lower():
                raise
            problem, cause = "failed its CRC32C check", exc
        raise CorruptChunkError(
            f"array {name} of store {self.target.url} {problem} in samples {sl.start}-{sl.stop}",
            "run `lineargan verify --repair <store>` and rerun the cache flow to recompute the damaged chunks",
        ) from cause

    def read_samples(self, indices) -> tuple[list[np.ndarray], np.ndarray]:
        """Features (per layer, float16) and labels of the given samples, in the given order.

        Reads only the chunks that hold them (memory: one chunk plus the selected samples).
        """
        batch = self.read_selection(indices, features=True, images=False)
        return batch.features, batch.labels

    def read_selection(
        self, indices, *, features: bool = False, images: bool = True
    ) -> SampleBatch:
        """Latents, labels, detector flags, and optionally images and features of the given
        samples, in the given order. Reads only the chunks that hold them, one at a time, into
        arrays preallocated for the selection (memory: one chunk plus the selected samples)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= self.spec.n:
            raise ValueError(f"sample indices must lie in [0, {self.spec.n}), got {idx.tolist()}")
        size = self.spec.chunk_size
        out: SampleBatch | None = None

        def like(a: np.ndarray) -> np.ndarray:
            return np.empty((len(idx), *a.shape[1:]), a.dtype)

        for chunk in np.unique(idx // size):
            pos = np.flatnonzero(idx // size == chunk)
            part = self.read_chunk(int(chunk), features=features, images=images)
            local = idx[pos] - chunk * size
            if out is None:  # shapes and dtypes from the first chunk read
                out = SampleBatch(
                    latents=like(part.latents),
                    images=like(part.images) if images else part.images,
                    labels=like(part.labels),
                    detected=like(part.detected),
                    features=[like(f) for f in part.features],
                )
            out.latents[pos] = part.latents[local]
            out.labels[pos] = part.labels[local]
            out.detected[pos] = part.detected[local]
            if images:
                out.images[pos] = part.images[local]
            for dst, src in zip(out.features, part.features, strict=True):
                dst[pos] = src[local]
        assert out is not None
        return out

    def detected_flags(self) -> np.ndarray:
        """Per sample: did the segmenter's own detector label it."""
        return self._read("detected", self.group["detected"], slice(0, self.spec.n)).astype(bool)

    def verify(self, *, repair: bool = False) -> list[int]:
        """Read every done chunk; return (and with ``repair``, invalidate) the corrupt ones."""
        bad = []
        for i in np.flatnonzero(self.done_mask()):
            try:
                # a regenerate-policy store has no stored features to check
                self.read_chunk(int(i), features=not self.spec.regenerates, images=True)
            except CorruptChunkError:
                bad.append(int(i))
                if repair:
                    self.invalidate_chunk(int(i))
        return bad

    def iter_chunks(self, **kwargs) -> Iterator[tuple[int, SampleBatch]]:
        for i in range(self.spec.n_chunks):
            yield i, self.read_chunk(i, **kwargs)


def _has_group(target: Target) -> bool:
    fs, path = target.fs, target.path
    return fs.exists(f"{path.rstrip('/')}/zarr.json")


def _is_half_created(target: Target) -> bool:
    attrs = zarr.open_group(target.url, mode="r").attrs.asdict()
    return attrs.get("lineargan_state") == "creating" and "fingerprint" not in attrs

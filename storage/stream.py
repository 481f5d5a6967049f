"""Training batches streamed from a feature store with bounded memory and prefetching.

A background thread reads whole Zarr chunks (the unit of compression) in a shuffled order,
mixes ``buffer_chunks`` of them into one block and shuffles the samples within it; the trainer
draws batches of any size from consecutive blocks. Memory is bounded by
``(prefetch + 1) × buffer_chunks`` chunks, whatever the store's N, and images are never
regenerated: the store is read, not the GAN.

When the decoded chunks fit ``memory_budget`` bytes (default
:data:`DEFAULT_MEMORY_BUDGET`, ``LINEARGAN_STREAM_MEMORY_MB`` overrides), each chunk is
decompressed and checksummed once and kept: later epochs draw from memory. The shuffles are the
same either way, so a fit gets the very same batches with or without the cache.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading

import numpy as np
import torch

from lineargan.cache import SampleBatch
from storage.feature_store import FeatureStore

# Decoded training data a stream may keep (per stream). The quick profile's training store is
# ~0.5 GB decoded; the paper's is ~12.8 GB and streams from disk.
DEFAULT_MEMORY_BUDGET = 1 << 30


def memory_budget() -> int:
    """Bytes of decoded chunks one stream may keep (``LINEARGAN_STREAM_MEMORY_MB``)."""
    mb = os.environ.get("LINEARGAN_STREAM_MEMORY_MB")
    return DEFAULT_MEMORY_BUDGET if mb in (None, "") else int(float(mb) * (1 << 20))


def decoded_bytes(store: FeatureStore, chunk_ids: list[int]) -> int:
    """Size of the given chunks' features (float16) and labels (uint8) once decompressed."""
    spec = store.spec
    per_sample = 2 * sum(c * h * w for c, h, w in spec.layer_shapes) + spec.resolution**2
    samples = sum(spec.chunk_slice(i).stop - spec.chunk_slice(i).start for i in chunk_ids)
    return per_sample * samples


def _take(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    return a[index]


def _take_pinned(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``a[index]`` written into page-locked memory (a NumPy view of a pinned tensor; slices
    of it handed to ``torch.from_numpy`` stay pinned)."""
    out = torch.empty((len(index), *a.shape[1:]), dtype=_TORCH_DTYPES[a.dtype], pin_memory=True)
    view = out.numpy()
    np.take(a, index, axis=0, out=view)
    return view


_TORCH_DTYPES = {np.dtype(np.float16): torch.float16, np.dtype(np.uint8): torch.uint8}


class ChunkStream:
    """Endless shuffled stream of (features, labels) samples over the given chunks."""

    def __init__(
        self,
        store: FeatureStore,
        seed: int = 0,
        buffer_chunks: int = 4,
        prefetch: int = 2,
        chunk_ids: list[int] | None = None,
        memory_budget_bytes: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        self.store = store
        # shuffled blocks in page-locked memory: copies to a GPU are then asynchronous
        # (``non_blocking=True`` overlaps them with compute); only where CUDA exists
        self.pin_memory = pin_memory and torch.cuda.is_available()
        # the reader thread works on the card of the thread that made the stream (a
        # regenerate-policy store runs the generator there; set_device is per thread)
        self._card = torch.cuda.current_device() if torch.cuda.is_available() else None
        self.chunk_ids = list(range(store.spec.n_chunks)) if chunk_ids is None else list(chunk_ids)
        if not self.chunk_ids:
            raise ValueError("ChunkStream needs at least one chunk to stream from")
        budget = memory_budget() if memory_budget_bytes is None else memory_budget_bytes
        # blocks in flight: the queue, the one being drawn from and the one being built; big
        # chunks (a 256-px StyleGAN2's are GBs) shrink the block instead of the memory
        chunk = decoded_bytes(store, self.chunk_ids[:1])
        fits = memory_budget() // max(1, chunk * (max(1, prefetch) + 2))
        self.buffer_chunks = max(1, min(buffer_chunks, fits))
        # chunk id -> decoded chunk, filled by the producer thread only (None: stream from disk)
        self._decoded: dict[int, SampleBatch] | None = (
            {} if decoded_bytes(store, self.chunk_ids) <= budget else None
        )
        self._rng = np.random.default_rng(seed)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._block: tuple[list[np.ndarray], np.ndarray] | None = None
        self._offset = 0
        # The producer reports an error once and then exits; remembering it here lets every
        # later ``next_batch`` raise it again instead of waiting forever on an empty queue.
        self._error: BaseException | None = None
        self._skip = 0
        # started by the first batch drawn, so :meth:`skip` can still move the start
        self._thread = threading.Thread(target=self._produce, daemon=True)

    def start(self) -> None:
        """Start reading ahead (the first batch drawn does it too)."""
        if self._thread.ident is None:
            self._thread.start()

    def skip(self, n: int) -> None:
        """Start ``n`` samples into the stream, as if they had been drawn and thrown away, but
        without reading them: the shuffles only depend on the seed and the chunk sizes, so the
        skipped blocks are replayed from the random generator alone. A resumed fit gets the
        very batches the interrupted one would have drawn next."""
        if self._thread.ident is not None:
            raise RuntimeError("skip() must come before the first batch is drawn")
        self._skip = int(n)

    def _block_size(self, ids: np.ndarray) -> int:
        spec = self.store.spec
        return sum(spec.chunk_slice(int(i)).stop - spec.chunk_slice(int(i)).start for i in ids)

    def _produce(self) -> None:
        skip = self._skip
        if self._card is not None:
            torch.cuda.set_device(self._card)
        try:
            while not self._stop.is_set():
                order = self._rng.permutation(self.chunk_ids)
                for start in range(0, len(order), self.buffer_chunks):
                    ids = order[start : start + self.buffer_chunks]
                    if skip and skip >= (size := self._block_size(ids)):
                        self._rng.permutation(size)  # the draw the skipped block would make
                        skip -= size
                        continue
                    batches = []
                    for i in ids:  # one chunk may be a generator pass: stop between them
                        if self._stop.is_set():
                            return
                        batches.append(self._read(int(i)))
                    feats = [
                        np.concatenate([b.features[k] for b in batches])
                        for k in range(len(batches[0].features))
                    ]
                    labels = np.concatenate([b.labels for b in batches])
                    perm = self._rng.permutation(len(labels))
                    if skip:  # the resume point falls inside this block
                        perm, skip = perm[skip:], 0
                    take = _take_pinned if self.pin_memory else _take
                    self._put(([take(f, perm) for f in feats], take(labels, perm)))
                    if self._stop.is_set():
                        return
        except BaseException as exc:  # surface reader errors (e.g. a corrupt chunk) in next_batch
            self._put(exc)

    def _read(self, i: int) -> SampleBatch:
        if self._decoded is None:
            return self.store.read_chunk(i)
        if i not in self._decoded:
            self._decoded[i] = self.store.read_chunk(i)
        return self._decoded[i]

    @property
    def in_memory(self) -> bool:
        """Whether decoded chunks are kept (the store fits the memory budget)."""
        return self._decoded is not None

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _next_block(self) -> None:
        if self._error is not None:
            raise self._error
        self.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._error = item
            raise item
        self._block, self._offset = item, 0

    def next_batch(self, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
        """The next ``batch_size`` samples: per-layer float16 features and uint8 labels."""
        feat_parts: list[list[np.ndarray]] = []
        label_parts: list[np.ndarray] = []
        need = batch_size
        while need > 0:
            if self._block is None or self._offset >= len(self._block[1]):
                self._next_block()
            feats, labels = self._block
            take = min(need, len(labels) - self._offset)
            sl = slice(self._offset, self._offset + take)
            feat_parts.append([f[sl] for f in feats])
            label_parts.append(labels[sl])
            self._offset += take
            need -= take
        if len(label_parts) == 1:
            return feat_parts[0], label_parts[0]
        feats = [np.concatenate([p[k] for p in feat_parts]) for k in range(len(feat_parts[0]))]
        return feats, np.concatenate(label_parts)

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is None:
            return
        while not self._queue.empty():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        # a regenerating reader finishes its current chunk (one generator pass) first
        self._thread.join(timeout=120 if self.store.spec.regenerates else 5)
        self._block = None
        if self.pin_memory:
            # torch's host allocator keeps freed page-locked blocks for reuse: after a long
            # fit they would stay locked (RAM the OS can neither page nor give to others).
            # Blocks other streams still use are left alone; a failing card must not mask
            # the error that is closing this stream.
            with contextlib.suppress(RuntimeError):
                torch.accelerator.empty_host_cache()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

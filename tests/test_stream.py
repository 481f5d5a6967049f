"""ChunkStream: shuffled batches of any size from a store, epoch coverage, errors, shutdown."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from lineargan.errors import CorruptChunkError
from storage.feature_store import FeatureStore
from storage.stream import ChunkStream
from tests.conftest import build_synthetic_store, synthetic_spec

N, CHUNK = 64, 8  # 8 chunks; with buffer_chunks=4 a block holds 32 samples


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    """Sample k has label k at every pixel and every feature equal to k."""
    url = str(tmp_path_factory.mktemp("stream") / "s.zarr")
    return build_synthetic_store(url, synthetic_spec(n=N, chunk_size=CHUNK))


def sample_ids(feats: list[np.ndarray], labels: np.ndarray) -> list[int]:
    """Recover each sample's index and check all its arrays agree on it."""
    ids = labels[:, 0, 0].astype(int)
    assert (labels == ids[:, None, None]).all()
    for f in feats:
        assert (f.astype(np.float32) == ids[:, None, None, None]).all()
    return ids.tolist()


@pytest.mark.parametrize("batch", [1, 4, 64])
def test_batch_shapes_and_dtypes(store, batch):
    with ChunkStream(store, seed=0, buffer_chunks=4) as stream:
        for _ in range(3):
            feats, labels = stream.next_batch(batch)
            assert labels.shape == (batch, 4, 4) and labels.dtype == np.uint8
            assert [f.shape for f in feats] == [(batch, 2, 2, 2), (batch, 3, 4, 4)]
            assert all(f.dtype == np.float16 for f in feats)
            sample_ids(feats, labels)


def test_every_sample_seen_once_per_epoch(store):
    with ChunkStream(store, seed=1, buffer_chunks=4) as stream:
        # mixed sizes, summing to one epoch; 59 spans two 32-sample blocks
        seen: list[int] = []
        for size in (1, 4, 59):
            seen += sample_ids(*stream.next_batch(size))
        assert sorted(seen) == list(range(N))
        # a batch of 64 now spans blocks of the next epoch and is again a full permutation
        second = sample_ids(*stream.next_batch(64))
        assert sorted(second) == list(range(N))
        assert second != seen  # reshuffled between epochs
        # batches larger than an epoch cover the store at least once before repeating
        third = sample_ids(*stream.next_batch(96))
        assert sorted(third[:64]) == list(range(N))


def test_order_is_shuffled_and_seeded(store):
    def first_epoch(seed: int) -> list[int]:
        with ChunkStream(store, seed=seed, buffer_chunks=4) as stream:
            return sample_ids(*stream.next_batch(N))

    a, b, c = first_epoch(5), first_epoch(5), first_epoch(6)
    assert a == b
    assert a != c
    assert a != list(range(N))
    # samples are mixed across chunks within a block, not served chunk by chunk
    assert len({i // CHUNK for i in a[:CHUNK]}) > 1


def test_chunk_ids_restrict_the_stream(store):
    with ChunkStream(store, seed=0, buffer_chunks=2, chunk_ids=[1, 6]) as stream:
        ids = sample_ids(*stream.next_batch(3 * 2 * CHUNK))
    assert set(ids) == set(range(8, 16)) | set(range(48, 56))


def test_memory_is_bounded_by_prefetch(store):
    """The producer never holds more than ``prefetch`` blocks queued, however slow the reader."""
    stream = ChunkStream(store, seed=0, buffer_chunks=2, prefetch=1)
    try:
        time.sleep(0.3)  # let the producer run ahead as far as it can
        assert stream._queue.qsize() <= 1
        assert stream._thread.is_alive()  # blocked on the full queue, not finished
        feats, labels = stream.next_batch(2 * CHUNK)  # exactly one block
        assert len(labels) == 2 * CHUNK
    finally:
        stream.close()


def test_close_stops_the_thread(store):
    stream = ChunkStream(store, seed=0, prefetch=1)
    stream.next_batch(4)
    assert stream._thread.is_alive()
    stream.close()
    assert not stream._thread.is_alive()
    with ChunkStream(store, seed=0) as ctx:
        thread = ctx._thread
    assert not thread.is_alive()


def test_reader_errors_surface_in_next_batch(tmp_path):
    url = str(tmp_path / "s.zarr")
    store = build_synthetic_store(url, synthetic_spec(n=16, chunk_size=8))
    path = Path(url) / "labels" / "c" / "1" / "0" / "0"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with ChunkStream(store, seed=0, buffer_chunks=1) as stream, pytest.raises(CorruptChunkError):
        for _ in range(4):
            stream.next_batch(8)

"""ChunkStream: shuffled batches of any size from a store, epoch coverage, errors, shutdown."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_reads_ahead_at_most_prefetch_plus_one_blocks(store):
    """Memory bound: before anything is consumed the producer reads ``(prefetch + 1)`` blocks
    of ``buffer_chunks`` chunks (``prefetch`` queued, one waiting to be put) and then stops,
    however long the trainer takes; each consumed block lets it read exactly one more."""
    prefetch, buffer_chunks = 1, 2
    counted = FeatureStore.open(store.target)  # own instance: the shared fixture stays untouched
    reads: list[int] = []
    real_read = counted.read_chunk

    def counting_read(i: int, **kwargs):
        reads.append(i)
        return real_read(i, **kwargs)

    counted.read_chunk = counting_read
    bound = (prefetch + 1) * buffer_chunks  # 4 of the store's 8 chunks
    with ChunkStream(counted, seed=0, buffer_chunks=buffer_chunks, prefetch=prefetch) as stream:
        stream.start()
        wait_until(lambda: len(reads) >= bound)
        time.sleep(0.3)  # room to overrun: an unbounded producer would read on, epoch after epoch
        assert len(reads) == bound
        assert stream._thread.is_alive()  # parked on the full queue, not finished
        feats, labels = stream.next_batch(buffer_chunks * CHUNK)  # exactly one block
        assert len(labels) == buffer_chunks * CHUNK
        wait_until(lambda: len(reads) >= bound + buffer_chunks)
        time.sleep(0.3)
        assert len(reads) == bound + buffer_chunks


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
    flip_byte(Path(url) / "labels" / "c" / "1" / "0" / "0")
    with ChunkStream(store, seed=0, buffer_chunks=1) as stream, pytest.raises(CorruptChunkError):
        for _ in range(4):
            stream.next_batch(8)


def test_reader_error_is_raised_again_on_every_later_batch(tmp_path):
    """The producer dies with the error it reports: later batches must raise it again, not
    wait forever on a queue nobody fills (a trainer that retries would hang the run)."""
    url = str(tmp_path / "s.zarr")
    store = build_synthetic_store(url, synthetic_spec(n=16, chunk_size=8))
    flip_byte(Path(url) / "features" / "l1" / "c" / "1" / "0" / "0" / "0")
    with ChunkStream(store, seed=0, buffer_chunks=1) as stream:
        # chunk 0 is sound, so the error may come after one good block (order is shuffled)
        first = within_timeout(lambda: [stream.next_batch(8) for _ in range(4)])
        assert isinstance(first, CorruptChunkError)
        assert "features/l1" in str(first) and "8-16" in str(first)
        assert not stream._thread.is_alive()  # the producer is gone for good
        for _ in range(2):
            again = within_timeout(lambda: stream.next_batch(1))
            assert isinstance(again, CorruptChunkError)
            assert str(again) == str(first)


def test_fit_on_a_corrupt_store_fails_and_leaves_no_checkpoint(tmp_path):
    """The fit step surfaces the damaged chunk as the one-line error and saves nothing that a
    rerun would mistake for a finished fit."""
    from lineargan.config import FitConfig, Schedule
    from tasks.fit import fit_extractor

    url = str(tmp_path / "s.zarr")
    build_synthetic_store(url, synthetic_spec(n=16, chunk_size=8))
    flip_byte(Path(url) / "features" / "l0" / "c" / "0" / "0" / "0" / "0")
    cfg = FitConfig(extractor="LSE", schedule=Schedule(phases=((1, 4),), samples_per_epoch=8))
    results = tmp_path / "results"
    outcome = within_timeout(lambda: fit_extractor(url, cfg, str(results), device="cpu"))
    assert isinstance(outcome, CorruptChunkError)
    assert "features/l0" in str(outcome) and "Fix:" in str(outcome)
    assert list(results.glob("fits/*/config.json")) == []


# -- helpers ------------------------------------------------------------------------------------


def flip_byte(path: Path) -> None:
    """Damage one stored chunk file so its CRC32C check fails on read."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.01)


def within_timeout(fn, timeout: float = 10.0) -> object:
    """Run ``fn`` in a thread; return its result or the exception it raised. A call that is
    still blocked after ``timeout`` fails the test instead of hanging the suite."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"call still blocked after {timeout} s (it would hang forever)")
    return outcome[0]


def counting(store: FeatureStore) -> tuple[FeatureStore, list[int]]:
    """Its own instance of ``store`` whose chunk reads are recorded."""
    counted, reads = FeatureStore.open(store.target), []
    real_read = counted.read_chunk

    def read(i: int, **kwargs):
        reads.append(i)
        return real_read(i, **kwargs)

    counted.read_chunk = read
    return counted, reads


def test_memory_cache_gives_the_same_batches_and_decodes_each_chunk_once(store):
    disk_store, disk_reads = counting(store)
    mem_store, mem_reads = counting(store)
    sizes = [1, 4, 64, 7, 64, 64, 3]  # > 3 epochs of 64 samples, blocks split across batches
    with (
        ChunkStream(disk_store, seed=5, memory_budget_bytes=0) as disk,
        ChunkStream(mem_store, seed=5) as mem,
    ):
        assert not disk.in_memory and mem.in_memory
        for size in sizes:
            (fd, yd), (fm, ym) = disk.next_batch(size), mem.next_batch(size)
            np.testing.assert_array_equal(yd, ym)
            for a, b in zip(fd, fm, strict=True):
                np.testing.assert_array_equal(a, b)
    assert sorted(set(mem_reads)) == list(range(N // CHUNK))
    assert len(mem_reads) == N // CHUNK  # decoded once, however many epochs
    assert len(disk_reads) >= 3 * (N // CHUNK)


def test_a_store_over_the_budget_streams_from_disk(store, monkeypatch):
    per_sample = 2 * (2 * 2 * 2 + 3 * 4 * 4) + 4 * 4  # float16 features + uint8 labels
    with ChunkStream(store, memory_budget_bytes=N * per_sample - 1) as over:
        assert not over.in_memory
    with ChunkStream(store, memory_budget_bytes=N * per_sample) as exact:
        assert exact.in_memory
    monkeypatch.setenv("LINEARGAN_STREAM_MEMORY_MB", "0")
    with ChunkStream(store) as from_env:
        assert not from_env.in_memory


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_blocks_are_handed_back_when_the_stream_closes(store):
    """A pinned stream's page-locked blocks do not outlive it in torch's host cache."""

    def pinned() -> int:
        return torch.cuda.host_memory_stats().get("allocated_bytes.current", 0)

    torch.cuda.synchronize()
    torch.accelerator.empty_host_cache()  # blocks earlier tests left cached
    before = pinned()
    with ChunkStream(store, seed=0, buffer_chunks=4, pin_memory=True) as stream:
        assert stream.pin_memory
        for _ in range(4):
            feats, labels = stream.next_batch(16)
            torch.from_numpy(labels).to("cuda", non_blocking=True)
        assert torch.from_numpy(labels).is_pinned()
        assert pinned() > before
        del feats, labels
    torch.cuda.synchronize()
    assert pinned() == before

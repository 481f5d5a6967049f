"""The Zarr feature store with the real cache stage: resume after a crash, fingerprints,
checksums, completeness, and non-local (``memory://``) targets."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import tasks.cache as cache_jobs
from lineargan.config import DatasetConfig
from lineargan.errors import CorruptChunkError, FingerprintMismatchError, StoreIncompleteError
from lineargan.models.weights import sha256_file
from storage.feature_store import FeatureStore
from storage.layout import dataset_store, store_target
from storage.target import Target
from tasks.cache import (
    build_store,
    fill_chunk,
    finalize_store,
    prepare_store,
    spec_for,
)
from tests.conftest import (
    SMALL_CHUNK,
    SMALL_N,
    build_synthetic_store,
    latent_blocks,
    small_dataset,
    synthetic_batch,
    synthetic_spec,
)


class SimulatedKill(BaseException):
    """Stands in for SIGKILL: not an Exception, so no handler in the code under test eats it."""


def read_all(url: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(url, mode="r")
    out = {name: g[name][:] for name in ("latents", "images", "labels", "detected", "chunk_done")}
    for name in g["features"].array_keys():
        out[f"features/{name}"] = g["features"][name][:]
    return out


def assert_same_data(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture
def counted_generate(monkeypatch):
    """Count the G+P passes made by ``fill_chunk`` (it calls the name bound in jobs.cache)."""
    calls: list[int] = []
    real = cache_jobs.generate_and_label

    def wrapper(generator, segmenter, latents, device, *args, **kwargs):
        calls.append(len(latents))
        return real(generator, segmenter, latents, device, *args, **kwargs)

    monkeypatch.setattr(cache_jobs, "generate_and_label", wrapper)
    return calls


def copy_store(url: str, dest: Path) -> str:
    shutil.copytree(url, dest)
    return str(dest)


# -- the clean build ------------------------------------------------------------------------


def test_clean_build_is_complete_and_consistent(train_store_url, generator, segmenter):
    store = FeatureStore.open(Target(train_store_url), require_complete=True)
    spec = store.spec
    assert store.complete and store.pending_chunks() == []
    assert spec.n == SMALL_N and spec.n_chunks == SMALL_N // SMALL_CHUNK
    assert spec.generator_sha256 == generator.weights_sha256
    assert spec.class_names == segmenter.class_names
    assert spec.layer_shapes == ((512, 4, 4), (256, 8, 8), (128, 16, 16), (64, 32, 32))
    data = read_all(train_store_url)
    assert data["latents"].shape == (SMALL_N, 100) and data["latents"].dtype == np.float32
    expected = np.concatenate([z.numpy() for z in generator.iter_latents(SMALL_N, 0, SMALL_CHUNK)])
    np.testing.assert_array_equal(data["latents"], expected)
    assert data["images"].shape == (SMALL_N, 64, 64, 3) and data["images"].dtype == np.uint8
    assert data["labels"].dtype == np.uint8 and data["labels"].max() < len(spec.class_names)
    assert data["features/block3_32x32"].dtype == np.float16
    # every chunk really holds data (no sample left at the zero fill value)
    assert (data["images"].reshape(SMALL_N, -1).std(1) > 0).all()
    # the fallback rate recorded by finalize is the detector's miss rate
    attrs = zarr.open_group(train_store_url, mode="r").attrs.asdict()
    assert attrs["fallback_rate"] == pytest.approx(1 - data["detected"].mean())
    assert attrs["fallback_rate"] < 0.5
    assert attrs["generator_checkpoint"] is None


def test_store_from_generator_checkpoint_uses_it(tmp_path, generator, train_store_url):
    """A store made from an explicit weights file records it, and every chunk is made with it."""

    ckpt = tmp_path / "weights.tar"
    torch.save({"netG_state_dict": generator.state_dict()}, ckpt)
    cfg = DatasetConfig(n=SMALL_CHUNK, chunk_size=SMALL_CHUNK, generator_checkpoint=str(ckpt))
    url = build_store(cfg, str(tmp_path / "data"), device="cpu")
    store = FeatureStore.open(Target(url), require_complete=True)
    assert store.spec.generator_sha256 == sha256_file(ckpt) != generator.weights_sha256
    assert store.group.attrs["generator_checkpoint"] == str(ckpt)
    # same weights and seed: the first chunk equals the default store's first chunk
    ours, default = (
        store.read_chunk(0, images=True),
        FeatureStore.open(Target(train_store_url)).read_chunk(0, images=True),
    )
    np.testing.assert_array_equal(ours.latents, default.latents)
    np.testing.assert_array_equal(ours.images, default.images)


def test_stored_chunk_matches_direct_generation(train_store_url, generator, segmenter):

    store = FeatureStore.open(Target(train_store_url))
    chunk = store.read_chunk(2, images=True)
    direct = cache_jobs.generate_and_label(generator, segmenter, chunk.latents, torch.device("cpu"))
    np.testing.assert_array_equal(chunk.images, direct.images)
    np.testing.assert_array_equal(chunk.labels, direct.labels)
    for a, b in zip(chunk.features, direct.features, strict=True):
        np.testing.assert_array_equal(a, b)


def test_prepare_store_on_finished_store_has_nothing_pending(train_store_url, data_root):
    url, pending, n_chunks = prepare_store(small_dataset("train", 0), str(data_root))
    assert url == train_store_url and pending == [] and n_chunks == SMALL_N // SMALL_CHUNK


# -- crash and resume -------------------------------------------------------------------------


def test_resume_after_crash_computes_only_missing_chunks(
    tmp_path, monkeypatch, counted_generate, train_store_url
):
    cfg = small_dataset("train", 0)
    url, pending, _ = prepare_store(cfg, str(tmp_path))
    assert pending == [0, 1, 2, 3]

    real_write = FeatureStore.write_chunk

    def dying_write(self, i, data):
        if i == 2:
            # killed half-way: chunk 2's arrays land (with other bytes) but chunk_done does not
            g, sl = self.group, self.spec.chunk_slice(i)
            g["images"][sl] = 255 - data.images
            g["labels"][sl] = data.labels[::-1]
            for name, feat in zip(self.spec.layer_names, data.features, strict=True):
                g["features"][name][sl] = feat + 1
            raise SimulatedKill("worker killed")
        real_write(self, i, data)

    monkeypatch.setattr(FeatureStore, "write_chunk", dying_write)
    with pytest.raises(SimulatedKill):
        for i in pending:
            assert fill_chunk(url, i, "cpu")
    assert len(counted_generate) == 3  # chunks 0, 1 and the dying 2
    monkeypatch.setattr(FeatureStore, "write_chunk", real_write)

    store = FeatureStore.open(Target(url))
    assert store.pending_chunks() == [2, 3]
    with pytest.raises(StoreIncompleteError, match="Fix:"):
        finalize_store(url)
    with pytest.raises(StoreIncompleteError):
        FeatureStore.open(Target(url), require_complete=True)

    # rerun the whole stage, as a flow retry would
    counted_generate.clear()
    url2, pending2, _ = prepare_store(cfg, str(tmp_path))
    assert url2 == url and pending2 == [2, 3]
    computed = [fill_chunk(url, i, "cpu") for i in range(4)]  # done chunks are skipped
    assert computed == [False, False, True, True]
    assert counted_generate == [SMALL_CHUNK, SMALL_CHUNK]
    stats = finalize_store(url)
    assert stats["complete"] is True

    # identical to a clean single build of the same dataset
    assert_same_data(read_all(url), read_all(train_store_url))
    assert FeatureStore.open(Target(url)).spec == FeatureStore.open(Target(train_store_url)).spec


def test_half_created_store_is_recreated(tmp_path):
    spec = synthetic_spec(n=16, chunk_size=8)
    target = Target(str(tmp_path / "s.zarr"))
    zarr.open_group(target.url, mode="w").attrs.update({"lineargan_state": "creating"})
    with pytest.raises(FingerprintMismatchError):
        FeatureStore.open(target)  # no fingerprint yet
    store = FeatureStore.create(target, spec, latent_blocks(spec))
    assert store.pending_chunks() == [0, 1]
    assert FeatureStore.open(target).spec == spec


# -- fingerprints -------------------------------------------------------------------------------


def test_reopening_with_another_fingerprint_raises(train_store_url, data_root):
    cfg = small_dataset("train", 0)
    spec = spec_for(cfg)
    target = store_target(str(data_root), cfg.generator, cfg.segmenter, cfg.split, cfg.seed, cfg.n)
    assert target.url == train_store_url
    latents = latent_blocks(spec)
    for change in ({"seed": 7}, {"generator_sha256": "f" * 64}, {"chunk_size": 32}):
        with pytest.raises(FingerprintMismatchError) as err:
            FeatureStore.create(target, dataclasses.replace(spec, **change), latents)
        msg = str(err.value)
        assert "\n" not in msg and "Fix:" in msg and next(iter(change)) in msg
    # the same fingerprint reopens the finished store without touching it
    store = FeatureStore.create(target, spec, latents)
    assert store.complete and store.pending_chunks() == []
    np.testing.assert_array_equal(
        store.read_latents(slice(0, 4)), read_all(target.url)["latents"][:4]
    )


def test_open_missing_store_raises(tmp_path):
    with pytest.raises(StoreIncompleteError, match="Fix:"):
        FeatureStore.open(Target(str(tmp_path / "nothing.zarr")))


def test_format_version_mismatch_raises(tmp_path):
    spec = synthetic_spec(n=8, chunk_size=8)
    target = Target(str(tmp_path / "s.zarr"))
    FeatureStore.create(target, spec, latent_blocks(spec))
    g = zarr.open_group(target.url, mode="r+")
    g.attrs.update({"fingerprint": {**spec.fingerprint(), "format_version": 0}})
    with pytest.raises(FingerprintMismatchError, match="format version"):
        FeatureStore.open(target)


# -- checksums ------------------------------------------------------------------------------------


def flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupt_chunk_detected_repaired_and_recomputed(tmp_path, train_store_url):
    url = copy_store(train_store_url, tmp_path / "copy.zarr")
    clean = read_all(url)
    store = FeatureStore.open(Target(url), require_complete=True)
    flip_byte(Path(url) / "features" / "block3_32x32" / "c" / "1" / "0" / "0" / "0")

    with pytest.raises(CorruptChunkError) as err:
        store.read_chunk(1)
    msg = str(err.value)
    assert "\n" not in msg and "Fix:" in msg and "block3_32x32" in msg and "16-32" in msg
    store.read_chunk(0)  # neighbours are unaffected
    store.read_chunk(2)

    assert store.verify() == [1]
    assert store.pending_chunks() == []  # verify without repair changes nothing
    assert store.verify(repair=True) == [1]
    assert store.pending_chunks() == [1]
    assert not store.complete
    with pytest.raises(StoreIncompleteError):
        FeatureStore.open(Target(url), require_complete=True)

    # the cache stage recomputes exactly the damaged chunk
    assert [fill_chunk(url, i, "cpu") for i in range(4)] == [False, True, False, False]
    finalize_store(url)
    reopened = FeatureStore.open(Target(url), require_complete=True)
    assert reopened.verify() == []
    assert_same_data(read_all(url), clean)


def test_corrupt_label_chunk_detected(tmp_path, train_store_url):
    url = copy_store(train_store_url, tmp_path / "copy.zarr")
    flip_byte(Path(url) / "labels" / "c" / "3" / "0" / "0")
    store = FeatureStore.open(Target(url))
    with pytest.raises(CorruptChunkError, match="labels"):
        store.read_chunk(3, features=False)
    assert store.verify() == [3]


# -- missing chunk objects -------------------------------------------------------------------------

# one chunk object per kind of array, for chunk {i} (Zarr v3 keys "<array>/c/<i>/0/...")
CHUNK_OBJECTS = {
    "labels": "labels/c/{i}/0/0",
    "images": "images/c/{i}/0/0/0",
    "latents": "latents/c/{i}/0",
    "features/block3_32x32": "features/block3_32x32/c/{i}/0/0/0",
}


def copy_into_data_root(train_store_url: str, data_root: Path) -> str:
    """The session's training store, copied to where the cache stage of ``data_root`` finds it."""
    target = dataset_store(str(data_root), small_dataset("train", 0))
    Path(target.path).parent.mkdir(parents=True)
    return copy_store(train_store_url, Path(target.path))


@pytest.mark.parametrize("array", list(CHUNK_OBJECTS))
def test_missing_chunk_object_is_refused_reported_and_recomputed(tmp_path, train_store_url, array):
    """A deleted chunk object of a finished chunk is never read as zeros: reads raise the
    one-line CorruptChunkError, verify reports it, --repair reopens the chunk and the cache
    stage rewrites it (its latents too) to the original bytes."""
    url = copy_into_data_root(train_store_url, tmp_path / "data")
    clean = read_all(url)
    (Path(url) / CHUNK_OBJECTS[array].format(i=2)).unlink()
    store = FeatureStore.open(Target(url), require_complete=True)

    with pytest.raises(CorruptChunkError) as err:
        store.read_chunk(2, images=True)
    msg = str(err.value)
    assert "\n" not in msg and "Fix:" in msg and array in msg and "no chunk object" in msg
    assert "32-48" in msg
    store.read_chunk(1, images=True)  # neighbours are unaffected

    assert store.verify() == [2]
    assert store.pending_chunks() == []  # verify without repair changes nothing
    assert store.verify(repair=True) == [2]
    assert store.pending_chunks() == [2]

    # the cache stage: reopen (restores lost latents), recompute exactly that chunk, finalize
    assert prepare_store(small_dataset("train", 0), str(tmp_path / "data"))[1] == [2]
    assert [fill_chunk(url, i, "cpu") for i in range(4)] == [False, False, True, False]
    finalize_store(url)
    assert FeatureStore.open(Target(url), require_complete=True).verify() == []
    assert_same_data(read_all(url), clean)


def test_verify_reports_a_missing_and_a_truncated_chunk_together(tmp_path, train_store_url):
    url = copy_store(train_store_url, tmp_path / "copy.zarr")
    (Path(url) / CHUNK_OBJECTS["labels"].format(i=0)).unlink()
    truncated = Path(url) / CHUNK_OBJECTS["features/block3_32x32"].format(i=3)
    truncated.write_bytes(truncated.read_bytes()[:100])
    store = FeatureStore.open(Target(url))
    assert store.verify() == [0, 3]
    with pytest.raises(CorruptChunkError, match="labels"):
        store.read_selection([1, 2])


def test_reads_of_whole_arrays_refuse_a_missing_chunk(tmp_path, train_store_url):
    url = copy_store(train_store_url, tmp_path / "copy.zarr")
    (Path(url) / "detected" / "c" / "1").unlink()
    store = FeatureStore.open(Target(url))
    with pytest.raises(CorruptChunkError, match="detected"):
        store.n_detected()


# -- finalize ----------------------------------------------------------------------------------


def test_finalize_incomplete_store_raises(tmp_path):
    spec = synthetic_spec(n=24, chunk_size=8)
    target = Target(str(tmp_path / "s.zarr"))
    store = FeatureStore.create(target, spec, latent_blocks(spec))
    store.write_chunk(0, synthetic_batch(spec, 0))
    store.write_chunk(2, synthetic_batch(spec, 2))
    with pytest.raises(StoreIncompleteError) as err:
        store.finalize()
    assert "[1]" in str(err.value) and "Fix:" in str(err.value)
    assert not FeatureStore.open(target).complete
    store.write_chunk(1, synthetic_batch(spec, 1))
    stats = store.finalize()
    assert stats == {"complete": True, "fallback_rate": pytest.approx(0.5)}
    assert FeatureStore.open(target, require_complete=True).complete


def test_last_chunk_may_be_short(tmp_path):
    spec = synthetic_spec(n=20, chunk_size=8)
    assert spec.n_chunks == 3 and spec.chunk_slice(2) == slice(16, 20)
    target = Target(str(tmp_path / "s.zarr"))
    store = FeatureStore.create(target, spec, latent_blocks(spec))
    for i in range(3):
        store.write_chunk(i, synthetic_batch(spec, i))
    store.finalize()
    last = store.read_chunk(2)
    assert last.labels.shape == (4, 4, 4)
    assert last.labels[:, 0, 0].tolist() == [16, 17, 18, 19]


# -- memory:// targets ---------------------------------------------------------------------------


def test_memory_url_store_create_write_read(memory_url):
    spec = synthetic_spec(n=24, chunk_size=8)
    latents = np.arange(24 * 3, dtype=np.float32).reshape(24, 3)
    store = FeatureStore.create(Target(memory_url), spec, latent_blocks(spec, latents))
    assert store.pending_chunks() == [0, 1, 2]
    for i in range(3):
        store.write_chunk(i, synthetic_batch(spec, i))
    store.finalize()

    reopened = FeatureStore.open(Target(memory_url), require_complete=True)
    assert reopened.spec == spec
    np.testing.assert_array_equal(reopened.read_latents(slice(0, 24)), latents)
    for i, chunk in reopened.iter_chunks(images=True):
        expected = synthetic_batch(spec, i)
        np.testing.assert_array_equal(chunk.labels, expected.labels)
        np.testing.assert_array_equal(chunk.images, expected.images)
        np.testing.assert_array_equal(chunk.detected, expected.detected)
        for a, b in zip(chunk.features, expected.features, strict=True):
            assert a.dtype == np.float16
            np.testing.assert_array_equal(a, b)
    with pytest.raises(FingerprintMismatchError):
        FeatureStore.create(
            Target(memory_url), dataclasses.replace(spec, seed=1), latent_blocks(spec, latents)
        )


def test_create_rejects_wrong_latents_and_retry_starts_over(tmp_path):
    spec = synthetic_spec(n=16, chunk_size=8)
    target = Target(str(tmp_path / "s.zarr"))
    with pytest.raises(ValueError, match="latent block 1"):
        FeatureStore.create(target, spec, [np.zeros((8, 3)), np.zeros((8, 4))])
    with pytest.raises(ValueError, match="latents cover 8 samples"):
        FeatureStore.create(target, spec, [np.zeros((8, 3))])
    # the interrupted creations left no fingerprint, so a correct call starts over
    latents = np.arange(48, dtype=np.float32).reshape(16, 3)
    store = FeatureStore.create(target, spec, latent_blocks(spec, latents))
    np.testing.assert_array_equal(store.read_latents(slice(0, 16)), latents)
    assert store.pending_chunks() == [0, 1]


def test_create_consumes_latents_lazily_and_only_once(tmp_path):
    spec = synthetic_spec(n=16, chunk_size=8)
    target = Target(str(tmp_path / "s.zarr"))
    drawn: list[int] = []

    def blocks():
        for i in range(spec.n_chunks):
            drawn.append(i)
            yield np.full((8, 3), i, np.float32)

    FeatureStore.create(target, spec, blocks())
    assert drawn == [0, 1]
    drawn.clear()
    FeatureStore.create(target, spec, blocks())  # reopening does not draw latents again
    assert drawn == []


def test_train_eval_pair_must_come_from_the_same_models():
    from storage.feature_store import check_same_models

    train = synthetic_spec()
    check_same_models(train, synthetic_spec(split="eval", seed=1, n=16, chunk_size=4))  # fine
    for field, value in [
        ("generator_sha256", "f" * 64),
        ("segmenter", "other-seg"),
        ("class_names", ("background", "a")),
        ("layer_shapes", ((2, 2, 2), (5, 4, 4))),
    ]:
        with pytest.raises(FingerprintMismatchError, match=f"different models \\({field}") as err:
            check_same_models(train, synthetic_spec(split="eval", **{field: value}))
        assert "\n" not in str(err.value) and "Fix:" in str(err.value)


def test_analysis_context_refuses_mismatched_stores(tmp_path):
    from tasks.analyses.contract import RunContext

    train = build_synthetic_store(str(tmp_path / "train.zarr"), synthetic_spec())
    evals = build_synthetic_store(
        str(tmp_path / "eval.zarr"), synthetic_spec(split="eval", generator_sha256="e" * 64)
    )
    ctx = RunContext(train.target.url, evals.target.url, str(tmp_path / "r"), "smoke", "r")
    with pytest.raises(FingerprintMismatchError, match="generator_sha256"):
        ctx.stores()


def test_verify_command_names_missing_chunks_and_repairs_them(tmp_path, train_store_url, capsys):
    from flows.cli import main

    url = copy_store(train_store_url, tmp_path / "copy.zarr")
    (Path(url) / CHUNK_OBJECTS["latents"].format(i=1)).unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", url])
    assert exit_info.value.code == 1
    assert "missing or corrupt objects) [1]; rerun with --repair" in capsys.readouterr().out
    main(["verify", url, "--repair"])
    assert "marked for recomputation" in capsys.readouterr().out
    assert FeatureStore.open(Target(url)).pending_chunks() == [1]

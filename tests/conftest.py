"""Shared fixtures: the real models (loaded once) and small real stores (built once per session).

The stores are built with the real cache stage (``tasks.cache``) from the embedded
DCGAN and the dlib segmenter: 64 samples in chunks of 16 take about a second each on CPU.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from lineargan.cache import SampleBatch
from lineargan.config import DatasetConfig
from lineargan.models.registry import cached_generator, cached_segmenter
from storage.feature_store import FeatureStore, StoreSpec
from storage.target import Target
from tasks.cache import build_store
from tasks.run_context import RunContext
from tests.e2e_helpers import isolated_env, run_module

SMALL_N = 64
SMALL_CHUNK = 16


def stylegan2_face_store(root: Path, split: str, seed: int, n: int, chunk_size: int) -> str:
    """A store of a StyleGAN2 (genforce layout, random weights at 32 px, with per-layer noise)
    labelled by a random face-parsing UNet, built by the real cache stage under ``root``
    (the weights are written there once, seeded, so every split shares them)."""
    import lineargan.models.face_parser as fp
    from tests.test_stylegan2_genforce import random_state

    if not (root / "g.pth").exists():
        torch.save(random_state("genforce"), root / "g.pth")
        torch.manual_seed(0)
        torch.save(fp.FaceParsingUNet(n_classes=15, base_width=4).state_dict(), root / "p.pth")
    cfg = DatasetConfig(
        generator="stylegan2-genforce",
        generator_checkpoint=str(root / "g.pth"),
        segmenter="face-parser-unet",
        segmenter_checkpoint=str(root / "p.pth"),
        segmenter_options={"input_size": 32},
        split=split,
        seed=seed,
        n=n,
        chunk_size=chunk_size,
    )
    return build_store(cfg, str(root / "data"), device="cpu")


def small_dataset(split: str = "train", seed: int = 0) -> DatasetConfig:
    return DatasetConfig(split=split, seed=seed, n=SMALL_N, chunk_size=SMALL_CHUNK)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The test machine is small and shared: one torch thread is faster than two contended
    ones. Session-wide, so fixtures and tests alike run with it: a float reduction gives
    bit-identical results only at the same thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def generator():
    """The real embedded DigiFace DCGAN (the same instance the cache stage uses)."""
    return cached_generator("dcgan-digiface", "cpu")


@pytest.fixture(scope="session")
def segmenter():
    """The real dlib 68-landmark face segmenter."""
    return cached_segmenter("dlib-face68")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def train_store_url(data_root, generator, segmenter) -> str:
    """A finished training store (seed 0, n=64, chunks of 16), built in one clean pass."""
    return build_store(small_dataset("train", 0), str(data_root), device="cpu")


@pytest.fixture(scope="session")
def eval_store_url(data_root, generator, segmenter) -> str:
    """A finished evaluation store (seed 1, n=64, chunks of 16)."""
    return build_store(small_dataset("eval", 1), str(data_root), device="cpu")


@pytest.fixture
def ctx(tmp_path, train_store_url, eval_store_url) -> RunContext:
    """An analysis context over the small real stores, with this test's own results root."""
    return RunContext(
        train_url=train_store_url,
        eval_url=eval_store_url,
        results_root=str(tmp_path / "results"),
        profile="smoke",
        run_id="test-run",
        device="cpu",
    )


# -- synthetic stores (no models): every sample carries its own index --------------------------


def synthetic_spec(n: int = 64, chunk_size: int = 8, **overrides) -> StoreSpec:
    fields = dict(
        generator="synthetic",
        generator_sha256="0" * 64,
        segmenter="synthetic-seg",
        segmenter_sha256="1" * 64,
        class_names=tuple(["background"] + [f"c{i}" for i in range(1, 256)]),
        split="train",
        seed=0,
        n=n,
        chunk_size=chunk_size,
        latent_dim=3,
        resolution=4,
        layer_names=("l0", "l1"),
        layer_shapes=((2, 2, 2), (3, 4, 4)),
    )
    fields.update(overrides)
    return StoreSpec(**fields)


def synthetic_batch(spec: StoreSpec, i: int) -> SampleBatch:
    """Chunk ``i`` where sample k has label k (everywhere) and features filled with k."""
    sl = spec.chunk_slice(i)
    ids = np.arange(sl.start, sl.stop)
    r = spec.resolution
    return SampleBatch(
        latents=np.repeat(ids[:, None], spec.latent_dim, 1).astype(np.float32),
        images=np.broadcast_to(ids[:, None, None, None], (len(ids), r, r, 3)).astype(np.uint8),
        labels=np.broadcast_to(ids[:, None, None], (len(ids), r, r)).astype(np.uint8),
        detected=ids % 2 == 0,
        features=[
            np.broadcast_to(ids.reshape(-1, 1, 1, 1), (len(ids), *shape)).astype(np.float16)
            for shape in spec.layer_shapes
        ],
    )


def latent_blocks(spec: StoreSpec, latents: np.ndarray | None = None) -> list[np.ndarray]:
    """Per-chunk latent blocks as ``FeatureStore.create`` takes them (zeros by default)."""
    if latents is None:
        latents = np.zeros((spec.n, spec.latent_dim), np.float32)
    return [latents[spec.chunk_slice(i)] for i in range(spec.n_chunks)]


def synthetic_latents(spec: StoreSpec) -> np.ndarray:
    return np.repeat(np.arange(spec.n)[:, None], spec.latent_dim, 1).astype(np.float32)


def build_synthetic_store(url: str, spec: StoreSpec | None = None) -> FeatureStore:
    spec = spec or synthetic_spec()
    store = FeatureStore.create(Target(url), spec, latent_blocks(spec, synthetic_latents(spec)))
    for i in range(spec.n_chunks):
        store.write_chunk(i, synthetic_batch(spec, i))
    store.finalize()
    return store


@pytest.fixture
def memory_url():
    """A fresh ``memory://`` location, removed after the test."""
    root = f"memory://lineargan-test-{uuid.uuid4().hex}"
    yield f"{root}/store.zarr"
    target = Target(root)
    if target.exists():
        target.fs.rm(target.path, recursive=True)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One uninterrupted ``python -m flows.reproduce --profile smoke`` in ephemeral mode, shared
    by the end-to-end tests that need one (a smoke run is a minute of the suite): its root
    (``results/`` and ``data/`` below it), environment and finished process."""
    root = tmp_path_factory.mktemp("smoke-run")
    env = isolated_env(root)
    return root, env, run_module("flows.reproduce", ["--profile", "smoke"], env)

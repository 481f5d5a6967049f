"""Cache stage: create a dataset's store, fill its chunks (resumably), finalize it."""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from tqdm import tqdm

from lineargan.cache import SampleBatch, generate_and_label
from lineargan.config import DatasetConfig, identity_options, options_json
from lineargan.device import resolve_device
from lineargan.models import GeneratorAdapter, Segmenter
from lineargan.models.registry import cached_generator, cached_segmenter
from storage.feature_store import FeatureStore, StoreSpec
from storage.layout import dataset_store
from storage.size import StoreSize, check_run_budget, check_store_budget, estimated_bytes
from storage.target import Target
from tasks.process import tune_process
from tasks.store_models import store_generator, store_segmenter


def spec_for(cfg: DatasetConfig) -> StoreSpec:
    """The fingerprint a store of ``cfg`` must carry (loads the models to hash their weights).
    Its layers are the ones the store policy serves, at the sizes it serves them."""
    g, p = _models(cfg)
    names, shapes = cfg.store_policy.served(g.layer_names, g.layer_shapes())
    return StoreSpec(
        generator=cfg.generator,
        generator_sha256=g.weights_sha256,
        segmenter=cfg.segmenter,
        segmenter_sha256=p.weights_sha256,
        class_names=tuple(p.class_names),
        split=cfg.split,
        seed=cfg.seed,
        n=cfg.n,
        chunk_size=cfg.chunk_size,
        latent_dim=g.latent_dim,
        resolution=g.resolution,
        layer_names=tuple(names),
        layer_shapes=tuple(shapes),
        generator_options=options_json(identity_options(cfg.generator_options)),
        segmenter_options=options_json(identity_options(cfg.segmenter_options)),
        store_policy=options_json(cfg.store_policy.identity()),
        generator_precision=cfg.generator_precision,
    )


def _models(cfg: DatasetConfig) -> tuple[GeneratorAdapter, Segmenter]:
    g = cached_generator(
        cfg.generator, "cpu", cfg.generator_checkpoint, options_json(cfg.generator_options)
    )
    p = cached_segmenter(
        cfg.segmenter, cfg.segmenter_checkpoint, options_json(cfg.segmenter_options)
    )
    return g, p


def size_stores(datasets: list[DatasetConfig], data_root: str) -> int:
    """Print what each store of a run will write and refuse the run before
    anything is written when a store cannot be made as asked (its models do not load, e.g. a
    checkpoint that pickles code; its policy names layers the generator lacks; a store at its
    path was made for another dataset, e.g. another chunk size), a new store exceeds its
    budget or the stores together exceed the free space of ``data_root`` (a resumed store
    counts only its missing chunks). Returns the bytes to go.

    The run's pre-flight calls it once (``flows.preflight``), before any server starts; the
    models it loads stay cached in the process for the cache stage."""
    root = Target(data_root)
    sizes: dict[str, StoreSize] = {}
    for cfg in datasets:
        target = dataset_store(data_root, cfg)
        if target.url in sizes:
            continue
        spec = spec_for(cfg)
        if FeatureStore.exists(target):  # sized when it was created: only its missing chunks
            pending = len(FeatureStore.open_matching(target, spec).pending_chunks())
            remaining = estimated_bytes(spec, cfg.store_policy) * pending // spec.n_chunks
            print(f"store {target.url}: resuming, {pending} of {spec.n_chunks} chunks to go")
        else:
            remaining = check_store_budget(cfg, spec, target, _models(cfg)[0])
        sizes[target.url] = StoreSize(cfg.split, remaining, cfg.store_policy.allow_over_budget)
    return check_run_budget(list(sizes.values()), root)


def prepare_store(cfg: DatasetConfig, data_root: str) -> tuple[str, list[int], int]:
    """Create (or reopen) the store for ``cfg``; returns its URL, the chunks still to do and
    the total number of chunks. Size it first (:func:`size_stores`, with the run's other
    stores); the run's pre-flight checked that ``data_root`` can be written."""
    spec = spec_for(cfg)
    target = dataset_store(data_root, cfg)
    g, _ = _models(cfg)
    latents = (z.numpy() for z in g.iter_latents(cfg.n, cfg.seed, cfg.chunk_size))
    how_to_load = {  # checkpoints and all options, runtime ones included (not identity)
        "generator_checkpoint": cfg.generator_checkpoint,
        "segmenter_checkpoint": cfg.segmenter_checkpoint,
        "generator_load_options": options_json(cfg.generator_options),
        "segmenter_load_options": options_json(cfg.segmenter_options),
    }
    store = FeatureStore.create(target, spec, latents, extra_attrs=how_to_load)
    return target.url, store.pending_chunks(), spec.n_chunks


def fill_chunk(store_url: str, index: int, device: str = "auto") -> bool:
    """Generate, label and write chunk ``index`` unless it is already done; True if computed."""
    tune_process()
    store = FeatureStore.open(Target(store_url))
    if store.is_done(index):
        return False
    store.write_chunk(index, compute_chunk(store, index, device))
    return True


def compute_chunk(store: FeatureStore, index: int, device: str = "auto") -> SampleBatch:
    """Run G and P on chunk ``index``'s stored latents (models checked against the fingerprint)."""
    spec = store.spec
    dev = resolve_device(device)
    g, p = store_generator(store, str(dev)), store_segmenter(store)
    with torch.inference_mode():
        latents = store.read_latents(spec.chunk_slice(index))
        return generate_and_label(
            g, p, latents, dev, spec.generator_precision, keep_features=not spec.regenerates
        )


def finalize_store(store_url: str) -> dict:
    """Mark the store complete (all chunks present) and return its summary statistics."""
    return FeatureStore.open(Target(store_url)).finalize()


def build_store(cfg: DatasetConfig, data_root: str, device: str = "auto") -> str:
    """The whole cache stage in one process (benchmarks, scripts): chunk i is compressed and
    written on a background thread while chunk i+1 is generated, so storage overlaps compute.
    Memory holds at most two chunks."""
    tune_process()
    size_stores([cfg], data_root)
    url, pending, _ = prepare_store(cfg, data_root)
    store = FeatureStore.open(Target(url))
    bar = tqdm(pending, desc=f"cache {cfg.split}", unit="chunk", disable=not sys.stderr.isatty())
    with ThreadPoolExecutor(max_workers=1) as writer:
        inflight: Future | None = None
        for i in bar:
            batch = compute_chunk(store, i, device)
            if inflight is not None:
                inflight.result()  # surface write errors; bounds memory to two chunks
            inflight = writer.submit(store.write_chunk, i, batch)
        if inflight is not None:
            inflight.result()
    finalize_store(url)
    return url

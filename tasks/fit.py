"""The one fit-or-reuse routine: every place that trains an extractor goes through it.

Table 1's fits, category selection's round 2, the few-shot LSEs and the layer-wise LSE differ
only in what they feed the fit loop (a stream over the store, remapped labels, N samples held
in memory) and in what else their result depends on. A :class:`FitJob` names both; the job's
key (fit config + training-store digest + ``key_extra``) picks the checkpoint directory, so a
finished fit is reloaded instead of retrained and every checkpoint records the same metadata
shape (:func:`fit_metadata`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lineargan.config import FitConfig
from lineargan.device import resolve_device
from lineargan.extractors import SemanticExtractor, build_extractor
from lineargan.training import BatchSource, FitResult, ProgressFn, fit
from storage.checkpoints import is_finished, load_extractor, save_extractor
from storage.feature_store import FeatureStore, StoreSpec
from storage.layout import fit_target
from storage.stream import ChunkStream
from storage.target import Target
from tasks.models import limit_torch_threads

SourceFactory = Callable[[], AbstractContextManager[BatchSource]]


def fit_key(cfg: FitConfig, train_digest: str, extra: dict | None = None) -> str:
    """A fit is identified by its configuration, the exact training store it reads and
    whatever else changes its result (``extra``: kept classes, sample indices, α, ...)."""
    extra = extra or {}
    if {"fit", "train"} & set(extra):
        raise ValueError("key_extra may not redefine 'fit' or 'train'")
    payload: dict[str, Any] = {"fit": cfg.model_dump(mode="json"), "train": train_digest, **extra}
    blob = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class FitJob:
    """One extractor fit: what to train, how it is named on disk, what it depends on.

    ``prefix`` names the checkpoint directory (``fits/<prefix>-<key16>``); ``class_names`` are
    the classes the extractor predicts (fewer than the store's after category selection);
    ``fit_kwargs`` go to :func:`lineargan.training.fit` (``layer_loss_weight``,
    ``ignore_index``) and ``metadata`` into the checkpoint's config.json.
    """

    cfg: FitConfig
    prefix: str
    class_names: tuple[str, ...]
    key_extra: dict = field(default_factory=dict)
    fit_kwargs: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def key(self, spec: StoreSpec) -> str:
        return fit_key(self.cfg, spec.digest(), self.key_extra)

    def build(self, spec: StoreSpec) -> SemanticExtractor:
        kwargs = self.cfg.extractor_kwargs()
        torch.manual_seed(self.cfg.seed)  # initial weights are part of what the key promises
        return build_extractor(
            self.cfg.extractor,
            n_class=len(self.class_names),
            dims=[s[0] for s in spec.layer_shapes],
            **kwargs,
        )


def fit_metadata(
    job: FitJob,
    key: str,
    fit_dir: Path,
    train_url: str,
    spec: StoreSpec,
    result: FitResult,
    device: torch.device,
) -> dict:
    """What a checkpoint's config.json records about its fit (and what the tables read back)."""
    return {
        "extractor": job.cfg.extractor,
        "fit_key": key,
        "fit_dir": str(fit_dir),
        "fit_config": job.cfg.model_dump(mode="json"),
        "train_store": train_url,
        "train_digest": spec.digest(),
        "generator": spec.generator,
        "segmenter": spec.segmenter,
        "class_names": list(job.class_names),
        **job.metadata,
        "iterations": result.iterations,
        "train_seconds": round(result.seconds, 3),
        "final_loss": result.final_loss,
        "device": str(device),
    }


def stream_source(store: FeatureStore, seed: int) -> SourceFactory:
    """Shuffled batches streamed from the store (the full-supervision source)."""
    return lambda: ChunkStream(store, seed=seed)


def fit_or_reuse(
    store: FeatureStore,
    train_url: str,
    job: FitJob,
    results_root: str,
    source: SourceFactory | None = None,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> dict:
    """Train ``job`` on ``store`` (batches from ``source``, by default the shuffled stream), or
    reload its finished checkpoint; returns the checkpoint's metadata with ``reused``."""
    spec = store.spec
    key = job.key(spec)
    fit_dir = Path(fit_target(results_root, job.prefix, key).path)
    if is_finished(fit_dir):
        _, meta = load_extractor(fit_dir)
        return {**meta, "reused": True}
    Target(results_root).ensure_writable()
    limit_torch_threads()
    dev = resolve_device(device)
    model = job.build(spec)
    with (source or stream_source(store, job.cfg.seed))() as batches:
        result = fit(
            model,
            batches,
            job.cfg.schedule,
            spec.resolution,
            dev,
            seed=job.cfg.seed,
            progress=progress,
            **job.fit_kwargs,
        )
    meta = fit_metadata(job, key, fit_dir, train_url, spec, result, dev)
    save_extractor(model, fit_dir, metadata=meta)
    return {**meta, "reused": False}


def fit_extractor(
    train_url: str,
    cfg: FitConfig,
    results_root: str,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> dict:
    """Table 1's fit of ``cfg.extractor`` on all classes of the store at ``train_url``."""
    store = FeatureStore.open(Target(train_url), require_complete=True)
    job = FitJob(cfg=cfg, prefix=cfg.extractor, class_names=store.spec.class_names)
    return fit_or_reuse(store, train_url, job, results_root, device=device, progress=progress)

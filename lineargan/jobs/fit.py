"""Fit stage: train one extractor on a cached training store, or reuse a finished fit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from lineargan.config import FitConfig
from lineargan.device import resolve_device
from lineargan.extractors import build_extractor, load_extractor, save_extractor
from lineargan.jobs.models import limit_torch_threads
from lineargan.training import FitResult, ProgressFn, fit
from storage.feature_store import FeatureStore, StoreSpec
from storage.layout import fit_target
from storage.stream import ChunkStream
from storage.target import Target


def fit_key(cfg: FitConfig, train_digest: str) -> str:
    """A fit is identified by its configuration and the exact training store it reads."""
    blob = json.dumps({"fit": cfg.model_dump(mode="json"), "train": train_digest}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def fit_metadata(
    cfg: FitConfig,
    key: str,
    fit_dir: Path,
    train_url: str,
    spec: StoreSpec,
    result: FitResult,
    device: torch.device,
    class_names: list[str],
    **extra: object,
) -> dict:
    """What a checkpoint's config.json records about its fit (and what the tables read back)."""
    return {
        "extractor": cfg.extractor,
        "fit_key": key,
        "fit_dir": str(fit_dir),
        "fit_config": cfg.model_dump(mode="json"),
        "train_store": train_url,
        "train_digest": spec.digest(),
        "generator": spec.generator,
        "segmenter": spec.segmenter,
        "class_names": class_names,
        **extra,
        "iterations": result.iterations,
        "train_seconds": round(result.seconds, 3),
        "final_loss": result.final_loss,
        "device": str(device),
    }


def fit_extractor(
    train_url: str,
    cfg: FitConfig,
    results_root: str,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> dict:
    """Train ``cfg.extractor`` on the store at ``train_url``; returns the fit's metadata.

    A finished checkpoint with the same key is reused (``reused=True``) instead of retrained.
    """
    limit_torch_threads()
    store = FeatureStore.open(Target(train_url), require_complete=True)
    spec = store.spec
    key = fit_key(cfg, spec.digest())
    target = fit_target(results_root, cfg.extractor, key)
    fit_dir = Path(target.path)
    if (fit_dir / "config.json").exists():
        _, meta = load_extractor(fit_dir)
        return {**meta, "reused": True}
    Target(results_root).ensure_writable()
    dev = resolve_device(device)
    kwargs = {} if cfg.extractor == "LSE" or cfg.ksize is None else {"ksize": cfg.ksize}
    torch.manual_seed(cfg.seed)  # initial weights are part of what the fit key promises
    model = build_extractor(
        cfg.extractor,
        n_class=len(spec.class_names),
        dims=[s[0] for s in spec.layer_shapes],
        **kwargs,
    )
    with ChunkStream(store, seed=cfg.seed) as stream:
        result = fit(
            model, stream, cfg.schedule, spec.resolution, dev, seed=cfg.seed, progress=progress
        )
    meta = fit_metadata(cfg, key, fit_dir, train_url, spec, result, dev, list(spec.class_names))
    save_extractor(model, fit_dir, metadata=meta)
    return {**meta, "reused": False}

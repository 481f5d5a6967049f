"""Train-or-reuse the baseline UNet segmenter, and score a differentiable segmenter.

The UNet (:mod:`lineargan.baseline`) is keyed like an extractor fit: its parameters plus the
digest of the exact training store it reads pick the checkpoint directory
(``fits/baseline-unet-<key16>``), so a finished UNet is reloaded instead of retrained and
every analysis that needs the baseline (its own table, SCS, SIE) shares one checkpoint.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from lineargan.baseline import UNetParams, UNetTraining, build_unet, segmenter_iou
from lineargan.device import resolve_device
from lineargan.driver import ProgressFn, drive
from lineargan.metrics import IoUResult
from lineargan.models import DifferentiableSegmenter
from lineargan.models.unet import UNetSegmenter
from storage.checkpoints import PartialFit, is_finished, load_unet, save_unet
from storage.feature_store import FeatureStore
from storage.layout import fit_target
from storage.target import Target
from tasks.fit import fit_save_seconds
from tasks.process import tune_process

PREFIX = "baseline-unet"


def unet_key(params: UNetParams, train_digest: str) -> str:
    """sha256 over the training parameters and the training store's digest."""
    blob = json.dumps(
        {"unet": params.model_dump(mode="json"), "train": train_digest}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def read_images_and_labels(store: FeatureStore) -> tuple[np.ndarray, np.ndarray]:
    """Every image (N, H, W, 3) and label map (N, H, W) of ``store``, read chunk by chunk
    (no features are decoded)."""
    batch = store.read_selection(np.arange(store.spec.n), images=True)
    return batch.images, batch.labels


def holdout_scores(
    segmenter: DifferentiableSegmenter, store: FeatureStore, params: UNetParams
) -> dict:
    """The UNet's mIoU on the training store's held-out part (the images it did not train
    on, :meth:`UNetParams.split`): what any choice of the UNet's settings is scored on, so the
    evaluation split that SCS/SIE draw targets from never picks them. Empty without one."""
    start, n = params.split(store.spec.n), store.spec.n
    if start == n:
        return {}
    held = store.read_selection(np.arange(start, n), images=True)
    results = segmenter_iou(
        segmenter, [(held.images, held.labels, held.detected)], store.spec.class_names
    )
    return {
        "holdout_images": [start, n],
        "holdout_miou": results["all"].miou,
        "holdout_miou_detected": results["detected"].miou,
    }


def unet_or_reuse(
    store: FeatureStore,
    train_url: str,
    params: UNetParams,
    results_root: str,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> tuple[UNetSegmenter, dict]:
    """The baseline UNet trained on ``store`` under ``params`` (reloaded when its checkpoint
    is finished); returns the segmenter and its checkpoint metadata with ``reused``."""
    spec = store.spec
    key = unet_key(params, spec.digest())
    fit_dir = fit_target(results_root, PREFIX, key).location
    dev = resolve_device(device)
    if is_finished(fit_dir):
        net, meta = load_unet(fit_dir, dev)
        return UNetSegmenter(net, spec.class_names, key), {**meta, "reused": True}
    Target(results_root).ensure_writable()
    tune_process()
    images, labels = read_images_and_labels(store)
    n_fit = params.split(spec.n)  # the rest is held out: holdout_scores
    images, labels = images[:n_fit], labels[:n_fit]
    net = build_unet(len(spec.class_names), params)
    partial = PartialFit(fit_dir)  # a killed fit resumes at its last save
    result = drive(
        UNetTraining(net, images, labels, params, dev),
        checkpoint=partial,
        save_every_s=fit_save_seconds(),
        progress=progress,
    )
    meta = {
        "key": key,
        "fit_dir": str(fit_dir),
        "params": params.model_dump(mode="json"),
        "train_store": train_url,
        "train_digest": spec.digest(),
        "generator": spec.generator,
        "segmenter": spec.segmenter,
        "class_names": list(spec.class_names),
        "n_train": n_fit,
        "iterations": result.iterations,
        "train_seconds": round(result.seconds, 3),
        "final_loss": result.final_loss,
        "device": str(dev),
    }
    segmenter = UNetSegmenter(net, spec.class_names, key)
    meta |= holdout_scores(segmenter.to(dev), store, params)
    save_unet(net, fit_dir, metadata=meta)
    partial.clear()
    return segmenter, {**meta, "reused": False}


def evaluate_segmenter(
    segmenter: DifferentiableSegmenter, eval_store: FeatureStore, device: str = "auto"
) -> dict[str, IoUResult]:
    """IoU of ``segmenter`` (moved to ``device``) against the evaluation store's reference
    labels: ``{"all": ..., "detected": ...}``, the second over the images where the reference
    segmenter's detector fired. One chunk of images in memory at a time."""
    segmenter.to(resolve_device(device))
    chunks = (
        (c.images, c.labels, c.detected)
        for _, c in eval_store.iter_chunks(features=False, images=True)
    )
    return segmenter_iou(segmenter, chunks, eval_store.spec.class_names)

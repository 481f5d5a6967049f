"""Evaluate extractors on a held-out split, chunk by chunk (memory bounded by one chunk)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from lineargan.extractors.base import SemanticExtractor
from lineargan.metrics import IoUResult, SubsetIoU
from lineargan.training import to_tensors


@torch.no_grad()
def predict(
    model: SemanticExtractor,
    feats: list[np.ndarray],
    size: int,
    device: torch.device,
    batch: int = 64,
) -> np.ndarray:
    """Argmax labels (B, size, size) uint8 for float16 feature arrays."""
    out = []
    for s in range(0, len(feats[0]), batch):
        xs, _ = to_tensors([f[s : s + batch] for f in feats], np.zeros(0, np.uint8), device)
        out.append(model(xs, size).argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


def evaluate(
    model: SemanticExtractor,
    chunks: Iterable[tuple[list[np.ndarray], np.ndarray]],
    class_names: tuple[str, ...],
    size: int,
    device: torch.device,
) -> IoUResult:
    """IoU (Appx A) of ``model``'s predictions against the segmenter's labels."""
    return evaluate_many([model], chunks, class_names, size, device)[0]


def evaluate_many(
    models: Sequence[torch.nn.Module],
    chunks: Iterable[tuple[list[np.ndarray], np.ndarray]],
    class_names: tuple[str, ...],
    size: int,
    device: torch.device,
) -> list[IoUResult]:
    """:func:`evaluate` for several models in one pass over the chunks (each chunk is read
    once, whatever the number of models); same IoU (Appx A)."""
    masked = ((feats, labels, None) for feats, labels in chunks)
    return [r["all"] for r in evaluate_subsets(models, masked, class_names, size, device)]


def evaluate_subsets(
    models: Sequence[torch.nn.Module],
    chunks: Iterable[tuple[list[np.ndarray], np.ndarray, np.ndarray | None]],
    class_names: tuple[str, ...],
    size: int,
    device: torch.device,
) -> list[dict[str, IoUResult]]:
    """IoU of each model on all images and on the images a mask selects (each chunk's third
    item, e.g. the store's ``detected`` flags: the images whose labels come from the
    segmenter's own detection rather than a fallback). One pass, one prediction per image;
    results are ``{"all": ..., "detected": ...}`` (only "all" when no chunk has a mask)."""
    for m in models:
        m.to(device).eval()
    accs = [SubsetIoU(class_names) for _ in models]
    for feats, labels, mask in chunks:
        for model, acc in zip(models, accs, strict=True):
            acc.update(predict(model, feats, size, device), labels, mask)
    return [acc.results() for acc in accs]

"""Per-process model cache, so mapped chunk tasks load G and P once per worker, not per chunk."""

from __future__ import annotations

import os
from functools import lru_cache

import torch

from lineargan.device import resolve_device
from lineargan.models import GeneratorAdapter, Segmenter, get_generator, get_segmenter


def limit_torch_threads() -> None:
    """Honour LINEARGAN_TORCH_THREADS so parallel workers do not oversubscribe the cores."""
    n = int(os.environ.get("LINEARGAN_TORCH_THREADS", "0") or 0)
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


@lru_cache(maxsize=4)
def cached_generator(
    name: str, device: str = "cpu", checkpoint: str | None = None
) -> GeneratorAdapter:
    kwargs = {"checkpoint": checkpoint} if checkpoint else {}
    return get_generator(name, **kwargs).to(resolve_device(device))


@lru_cache(maxsize=4)
def cached_segmenter(name: str) -> Segmenter:
    return get_segmenter(name)

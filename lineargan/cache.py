"""One G + P pass over a batch of latents: the only place images are generated for training.

The result is everything a store chunk holds, already in its storage dtypes (uint8 images and
labels, float16 features), so the storage layer only writes bytes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from lineargan.models.protocols import GeneratorAdapter, Segmenter


@dataclass
class SampleBatch:
    """A batch of samples as stored: latents, uint8 images/labels, detector flags, float16 features."""

    latents: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    detected: np.ndarray
    features: list[np.ndarray] = field(default_factory=list)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] → (B, H, W, 3) uint8."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def render_images(generator: GeneratorAdapter, latents: torch.Tensor, batch: int) -> np.ndarray:
    """G's images of ``latents`` as uint8 (B, H, W, 3), ``batch`` latents per call."""
    device = next(generator.parameters()).device
    return np.concatenate(
        [
            to_uint8(generator(latents[s : s + batch].to(device)).image)
            for s in range(0, len(latents), batch)
        ]
    )


def generator_precision(device: torch.device, precision: str = "float32"):
    """The context a generator forward runs in: bfloat16 autocast when asked for (the same
    on every read of a store, so stored and regenerated features stay identical)."""
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def generate_and_label(
    generator: GeneratorAdapter,
    segmenter: Segmenter,
    latents: np.ndarray,
    device: torch.device,
    precision: str = "float32",
) -> SampleBatch:
    """Run G on ``latents`` and P on G's images; return the chunk in storage dtypes."""
    z = torch.from_numpy(np.ascontiguousarray(latents)).to(device)
    with generator_precision(device, precision):
        out = generator(z)
    images = to_uint8(out.image.float())
    seg = segmenter.segment(images)
    return SampleBatch(
        latents=latents,
        images=images,
        labels=seg.labels,
        detected=seg.detected,
        features=[f.to(torch.float16).cpu().numpy() for f in out.features],
    )

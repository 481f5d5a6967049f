"""One G + P pass over a batch of latents: the only place images are generated for training.

The result is everything a store chunk holds, already in its storage dtypes (uint8 images and
labels, float16 features), so the storage layer only writes bytes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from lineargan.errors import LinearGanError
from lineargan.models.protocols import GeneratorAdapter, Segmenter, clamp_image


@dataclass
class SampleBatch:
    """A batch of samples as stored: latents, uint8 images/labels, detector flags, float16 features."""

    latents: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    detected: np.ndarray
    features: list[np.ndarray] = field(default_factory=list)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) generator images → (B, H, W, 3) uint8, clamped to [-1, 1] first."""
    x = ((clamp_image(images) + 1) * 127.5).round().to(torch.uint8)
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
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise LinearGanError(
                f"{torch.cuda.get_device_name(device)} has no bfloat16 (autocast would silently "
                "run float32 in a store that records bfloat16)",
                "use generator_precision float32 on this card",
            )
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def generator_batch(resolution: int) -> int:
    """Latents per generator call: whole 64-sample chunks for small generators, one image at
    a time at 1024 px (a StyleGAN2's activations for 64 such images would fill any card).
    Fixed by the resolution alone, so a store's cache pass and its regeneration split a chunk
    the same way and compute the same features."""
    return max(1, (1 << 20) // (resolution * resolution))


@torch.no_grad()
def generate_and_label(
    generator: GeneratorAdapter,
    segmenter: Segmenter,
    latents: np.ndarray,
    device: torch.device,
    precision: str = "float32",
    keep_features: bool = True,
) -> SampleBatch:
    """Run G on ``latents`` and P on G's images; return the chunk in storage dtypes
    (``keep_features`` False: no features, for a store that regenerates them)."""
    z = torch.from_numpy(np.ascontiguousarray(latents)).to(device)
    step = generator_batch(generator.resolution)
    images, features = [], []
    for start in range(0, len(z), step):
        with generator_precision(device, precision):
            out = generator(z[start : start + step])
        images.append(to_uint8(out.image.float()))
        if keep_features:
            features.append([f.to(torch.float16).cpu().numpy() for f in out.features])
    image_array = np.concatenate(images)
    seg = segmenter.segment(image_array)
    return SampleBatch(
        latents=latents,
        images=image_array,
        labels=seg.labels,
        detected=seg.detected,
        features=[np.concatenate(parts) for parts in zip(*features, strict=True)],
    )

"""The two contracts every model honours.

A generator turns a batch of latents into an image and the list of its per-layer feature maps;
a segmenter turns uint8 images into integer labels and names its classes. The cache stage only
talks to these, so a new GAN or segmenter is one adapter file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class GeneratorOutput:
    """Images in [-1, 1], shape (B, 3, H, W), and feature maps x_i, each (B, c_i, h_i, w_i)."""

    image: torch.Tensor
    features: list[torch.Tensor]


class GeneratorAdapter(nn.Module, ABC):
    """A pretrained generator exposing its internal feature maps.

    Subclasses set ``name``, ``latent_dim``, ``resolution`` and ``layer_names`` and implement
    :meth:`forward`. ``weights_sha256`` identifies the exact weights so stores made by one
    checkpoint are never mixed with another's.
    """

    name: str = ""
    latent_dim: int = 0
    resolution: int = 0
    layer_names: tuple[str, ...] = ()
    weights_sha256: str = "random-init"

    def iter_latents(self, n: int, seed: int, chunk_size: int) -> Iterator[torch.Tensor]:
        """Deterministic latents for ``n`` samples given ``seed``, ``chunk_size`` at a time.

        Drawn chunk by chunk from one seeded stream, so creating a store of any N holds one
        chunk of latents in memory. Standard normal by default; override for other strategies.
        """
        gen = torch.Generator().manual_seed(seed)
        for start in range(0, n, chunk_size):
            yield torch.randn(min(chunk_size, n - start), self.latent_dim, generator=gen)

    def sample_latents(self, n: int, seed: int, chunk_size: int = 64) -> torch.Tensor:
        """All ``n`` latents of :meth:`iter_latents` at once (small n only)."""
        return torch.cat(list(self.iter_latents(n, seed, chunk_size)))

    @abstractmethod
    def forward(self, latents: torch.Tensor) -> GeneratorOutput:
        """Run the generator on (B, latent_dim) latents."""

    @torch.no_grad()
    def layer_shapes(self) -> list[tuple[int, int, int]]:
        """(c, h, w) of each feature map, found by one forward pass on a dummy latent."""
        device = next(self.parameters()).device
        out = self.forward(torch.zeros(1, self.latent_dim, device=device))
        return [tuple(int(s) for s in f.shape[1:]) for f in out.features]  # type: ignore[misc]


@dataclass
class SegmenterOutput:
    """Integer labels (B, H, W) uint8 and, per image, whether the model's own detector fired."""

    labels: np.ndarray
    detected: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


class Segmenter(ABC):
    """A pretrained semantic segmenter; class 0 is always background."""

    name: str = ""
    class_names: tuple[str, ...] = ()
    weights_sha256: str = ""

    @abstractmethod
    def segment(self, images: np.ndarray) -> SegmenterOutput:
        """Label uint8 images of shape (B, H, W, 3) at their own resolution."""

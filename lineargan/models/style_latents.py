"""Latent strategies of style-based generators: z, w, w+ and truncated w+.

The authors sample and edit StyleGANs in one of four spaces (their ``latent_type``): ``z``
(the mapping network's input), ``w`` (its output, shared by every layer), ``wp`` (w+, one w per
synthesis layer) and ``trunc-wp`` (w+ pulled toward the average w on the first
``truncation_layers`` layers, their default for StyleGANs), plus ``mixwp``, the space their SCS
and SIE optimise in (``manipulation/strategy.py``): one z per synthesis layer, each mapped to
its own w, no truncation — so the prior and neighbour terms act on standard-normal variables.
Drawn from one z repeated per layer, ``mixwp`` gives the untruncated ``wp`` images. An
adapter's ``forward`` takes
latents in its chosen space, flattened, so the cache stores them and SCS/SIE optimise them
without knowing which space it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from lineargan.errors import LinearGanError

LatentSpace = Literal["z", "w", "wp", "trunc-wp", "mixwp"]
LATENT_SPACES: tuple[LatentSpace, ...] = ("z", "w", "wp", "trunc-wp", "mixwp")

Mapping = Callable[[torch.Tensor], torch.Tensor]  # z (B, z_dim) -> w (B, w_dim)


@dataclass(frozen=True)
class StyleLatents:
    """One strategy: how latents are drawn (:meth:`sample`) and read back (:meth:`to_wp`)."""

    space: LatentSpace
    z_dim: int
    w_dim: int
    num_layers: int  # w+ entries the synthesis network reads
    truncation: float = 0.7
    truncation_layers: int = 8

    def __post_init__(self) -> None:
        if self.space not in LATENT_SPACES:
            raise LinearGanError(
                f"unknown latent space {self.space!r}", f"use one of {list(LATENT_SPACES)}"
            )
        if not 0 <= self.truncation <= 1:
            raise LinearGanError(
                f"truncation {self.truncation} is outside [0, 1]", "pass a psi such as 0.7"
            )

    @property
    def dim(self) -> int:
        """Floats per latent in this space (the adapter's ``latent_dim``)."""
        if self.space == "mixwp":
            return self.num_layers * self.z_dim
        return {"z": self.z_dim, "w": self.w_dim}.get(self.space, self.num_layers * self.w_dim)

    @property
    def vectors(self) -> int:
        """Latent vectors per sample: 1 in ``z`` and ``w``, one per synthesis layer in the
        others (the adapter's ``latent_vectors``; the authors divide their prior term by it)."""
        return 1 if self.space in ("z", "w") else self.num_layers

    def sample(self, z: torch.Tensor, mapping: Mapping, w_avg: torch.Tensor) -> torch.Tensor:
        """Standard-normal ``z`` (B, z_dim) → latents of this space, (B, :attr:`dim`)."""
        if self.space == "z":
            return z
        if self.space == "mixwp":
            return z.repeat(1, self.num_layers)
        w = mapping(z)
        if self.space == "w":
            return w
        wp = w[:, None].repeat(1, self.num_layers, 1)
        if self.space == "trunc-wp":
            k = min(self.truncation_layers, self.num_layers)
            avg = w_avg.to(wp).reshape(1, 1, -1)
            wp[:, :k] = avg + self.truncation * (wp[:, :k] - avg)
        return wp.flatten(1)

    def to_wp(self, latents: torch.Tensor, mapping: Mapping) -> torch.Tensor:
        """Latents of this space → w+ (B, num_layers, w_dim), what synthesis reads."""
        if self.space in ("z", "w"):
            w = mapping(latents) if self.space == "z" else latents
            return w[:, None].expand(-1, self.num_layers, -1)
        if self.space == "mixwp":
            zs = latents.reshape(len(latents) * self.num_layers, self.z_dim)
            return mapping(zs).reshape(len(latents), self.num_layers, self.w_dim)
        return latents.reshape(len(latents), self.num_layers, self.w_dim)

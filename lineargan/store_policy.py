"""What a store keeps of the generator's features, and what that costs on disk.

StyleGAN2 at 1024 px has ~260 MB of float16 features per image over its 17 layers, so the
paper's 51,200 training images cannot all be stored. A policy says which features a store
serves: all layers or a subset, at full size or capped at a resolution, and whether they are
written at all or regenerated from the stored latents whenever they are read (the segmenter,
the expensive part, still runs once). Every consumer sees the *served* features through the
same transform, whether they come from disk, from a regeneration, or from a live generator
in SCS/SIE (:class:`PolicyGenerator`), so every experiment runs under every policy and the
same seed gives identical results with stored and with regenerated features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from lineargan.cache import generator_precision
from lineargan.errors import LinearGanError
from lineargan.models.protocols import GeneratorAdapter, GeneratorOutput, LatentWeights

Shape = tuple[int, int, int]


class StorePolicy(BaseModel):
    """Which generator features a store serves and whether it writes them.

    ``budget_gb`` and ``allow_over_budget`` only guard the cache run; the other fields decide
    the store's content and are part of its identity (:meth:`identity`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: Literal["stored", "regenerate"] = Field(
        "stored",
        description="stored = written to the store; regenerate = latents, images and labels "
        "only, the features are recomputed by the generator whenever they are read",
    )
    layers: tuple[str, ...] | None = Field(
        None, description="the generator layers to serve (None: all of them)"
    )
    max_resolution: PositiveInt | None = Field(
        None,
        description="feature maps larger than this are area-downsampled to it (None: full size)",
    )
    budget_gb: float | None = Field(
        None,
        gt=0,
        description="refuse a store whose estimated size exceeds this (None: 90 % of the free "
        "space of a local data_root, no limit on object storage)",
    )
    allow_over_budget: bool = Field(False, description="write a store over the budget anyway")

    def identity(self) -> dict:
        """The fields that change what a store holds ({} for the default policy)."""
        full = self.model_dump(mode="json", include={"features", "layers", "max_resolution"})
        default = StorePolicy().model_dump(
            mode="json", include={"features", "layers", "max_resolution"}
        )
        return {k: v for k, v in full.items() if v != default[k]}

    @property
    def regenerate(self) -> bool:
        return self.features == "regenerate"

    def layer_indices(self, names: Sequence[str]) -> list[int]:
        """Indices into the generator's ``names`` of the served layers, in the generator's order."""
        if self.layers is None:
            return list(range(len(names)))
        unknown = [n for n in self.layers if n not in names]
        if unknown or not self.layers:
            raise LinearGanError(
                f"store policy names layers {unknown or '[]'} the generator does not have",
                f"choose layers among {list(names)}",
            )
        return [i for i, n in enumerate(names) if n in self.layers]

    def served_shape(self, shape: Shape) -> Shape:
        c, h, w = shape
        cap = self.max_resolution
        if cap is None or max(h, w) <= cap:
            return shape
        scale = cap / max(h, w)
        return c, max(1, round(h * scale)), max(1, round(w * scale))

    def served(
        self, names: Sequence[str], shapes: Sequence[Shape]
    ) -> tuple[list[str], list[Shape]]:
        """Names and shapes of the served layers."""
        idx = self.layer_indices(names)
        return [names[i] for i in idx], [self.served_shape(tuple(shapes[i])) for i in idx]  # type: ignore[arg-type]

    def cap(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Downsample maps above ``max_resolution`` (area averaging: the mean feature of each
        output pixel's footprint, what an extractor upsampling it back would see)."""
        out = []
        for f in features:
            c, h, w = self.served_shape(tuple(f.shape[1:]))  # type: ignore[arg-type]
            out.append(f if (h, w) == tuple(f.shape[2:]) else F.interpolate(f, (h, w), mode="area"))
        return out

    def bytes_per_sample(self, resolution: int, latent_dim: int, shapes: Sequence[Shape]) -> int:
        """Uncompressed bytes one sample takes under this policy (``shapes`` = served ones)."""
        fixed = 4 * latent_dim + 3 * resolution**2 + resolution**2 + 1  # latent, image, label, flag
        if self.regenerate:
            return fixed
        return fixed + 2 * sum(c * h * w for c, h, w in shapes)  # float16 features


class PolicyGenerator(GeneratorAdapter):
    """A generator seen through a store policy: only the served layers, capped, computed in
    the store's precision.

    SCS, SIE and regeneration all call the generator; wrapping it makes their features exactly
    the ones the store's extractors were fitted on.
    """

    def __init__(
        self, base: GeneratorAdapter, policy: StorePolicy, precision: str = "float32"
    ) -> None:
        super().__init__()
        self.base = base
        self.policy = policy
        self.precision = precision
        self.index = policy.layer_indices(base.layer_names)
        self.name, self.latent_dim, self.latent_space, self.latent_vectors = (
            base.name,
            base.latent_dim,
            base.latent_space,
            base.latent_vectors,
        )
        self.resolution, self.weights_sha256 = base.resolution, base.weights_sha256
        self.layer_names = tuple(base.layer_names[i] for i in self.index)

    def iter_latents(self, n: int, seed: int, chunk_size: int):
        return self.base.iter_latents(n, seed, chunk_size)

    def latent_weights(self, module: str | None = None) -> LatentWeights:
        return self.base.latent_weights(module)

    def forward(self, latents: torch.Tensor) -> GeneratorOutput:
        with generator_precision(latents.device, self.precision):
            out = self.base(latents)
        return GeneratorOutput(
            image=out.image.float(),
            features=self.policy.cap([out.features[i] for i in self.index]),
        )

    def forward_features(
        self, latents: torch.Tensor, layers: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        wanted = self.index if layers is None else [self.index[i] for i in layers]
        with generator_precision(latents.device, self.precision):
            features = self.base.forward_features(latents, wanted)
        return self.policy.cap(features)


def with_policy(
    generator: GeneratorAdapter, policy: StorePolicy, precision: str = "float32"
) -> GeneratorAdapter:
    """``generator`` itself under the default policy in float32, else its
    :class:`PolicyGenerator` view."""
    if policy.layers is None and policy.max_resolution is None and precision == "float32":
        return generator
    return PolicyGenerator(generator, policy, precision)

"""The two contracts every model honours.

A generator turns a batch of latents into an image and the list of its per-layer feature maps;
a segmenter turns uint8 images into integer labels and names its classes. The cache stage only
talks to these, so a new GAN or segmenter is one adapter file. A segmenter that also gives
logits differentiable w.r.t. the image (:class:`DifferentiableSegmenter`) is what SCS and SIE
back-propagate through.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lineargan.errors import LinearGanError


@dataclass(frozen=True)
class LatentWeights:
    """The weights that read a generator's latent first: what SeFa factorises.

    ``per_layer`` False: ``weights`` holds one (out, latent_dim) matrix reading the adapter's
    whole latent (DCGAN's and PGGAN's z → 4×4 layer, a hooked module's input). ``per_layer``
    True: a style-based generator, ``weights[i]`` the (out_i, w_dim) style affine reading w+
    entry ``i``, so a direction lives in w and an edit shifts the chosen w+ entries.
    """

    weights: tuple[torch.Tensor, ...]
    per_layer: bool = False


def latent_matrix(module: nn.Module) -> torch.Tensor:
    """The (out, in) matrix of a linear map applied to a latent: ``nn.Linear`` as it is, a
    (transposed) convolution of a 1×1 latent map with one row per output channel and kernel
    tap (the padded 4×4 conv of PGGAN and the 4×4 transposed conv of DCGAN both place each tap
    at one output pixel, so the taps are the output units; a convolution whose padding leaves
    some taps reading only zeros is outside this: name its ``nn.Linear`` equivalent instead)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise LinearGanError(
            f"module {type(module).__name__} has no weight to factorise",
            "name a Linear, Conv2d or ConvTranspose2d module whose input is the latent",
        )
    weight = weight.detach()
    if isinstance(module, nn.ConvTranspose2d):  # (in, out, k, k)
        return weight.permute(1, 2, 3, 0).reshape(-1, weight.shape[0])
    if weight.ndim == 4:  # Conv2d (out, in, k, k)
        return weight.permute(0, 2, 3, 1).reshape(-1, weight.shape[1])
    if weight.ndim == 2:
        return weight
    raise LinearGanError(
        f"module {type(module).__name__} has a {weight.ndim}-d weight, not a linear map of the "
        "latent",
        "name a Linear, Conv2d or ConvTranspose2d module whose input is the latent",
    )


@dataclass
class GeneratorOutput:
    """Images nominally in [-1, 1], shape (B, 3, H, W), and feature maps x_i, each
    (B, c_i, h_i, w_i).

    The image is the generator's raw, differentiable output: never clamped, so pixels may
    leave [-1, 1] and keep their gradients (SIE's colour loss reads them). What displays,
    stores or segments an image clamps it first, with :func:`clamp_image`.
    """

    image: torch.Tensor
    features: list[torch.Tensor]


class GeneratorAdapter(nn.Module, ABC):
    """A pretrained generator exposing its internal feature maps.

    Subclasses set ``name``, ``latent_dim``, ``resolution`` and ``layer_names`` and implement
    :meth:`forward`. ``weights_sha256`` identifies the exact weights so stores made by one
    checkpoint are never mixed with another's.

    ``forward`` takes latents in the adapter's *latent space* (``latent_space``: ``z`` for
    a plain GAN; ``w``, ``wp`` or ``trunc-wp`` for a style-based one, flattened to
    ``latent_dim`` floats): that is the space the cache samples and stores, and the space
    SCS and SIE optimise in, so choosing a strategy is one adapter option.
    ``latent_vectors`` is how many vectors one latent stacks (one per synthesis layer in w+
    or mixwp, else 1): the authors' SCS/SIE prior term ‖z‖² is divided by it.
    """

    name: str = ""
    latent_dim: int = 0
    latent_space: str = "z"
    latent_vectors: int = 1
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

    def forward_features(
        self, latents: torch.Tensor, layers: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """The feature maps of ``layers`` (indices into ``layer_names``; None: all) only.

        Fitting from regenerated features needs no image; an adapter that can stop its forward
        pass after the last needed layer overrides this to save the rest of the network.
        """
        features = self.forward(latents).features
        return features if layers is None else [features[i] for i in layers]

    def latent_weights(self, module: str | None = None) -> LatentWeights:
        """The weights that read the latent first (SeFa's A; ``module``: the hooked adapter's
        module whose input is the latent). Families override this; others cannot be factorised."""
        raise LinearGanError(
            f"generator {self.name or type(self).__name__!r} does not expose the weights that "
            "read its latent",
            "use a registered DCGAN, PGGAN or StyleGAN adapter, or torch-hooks with a module",
        )

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
    # What its masks can show, so SIE scores an edit only with a segmenter that can register
    # it (:func:`lineargan.analyses.sie.unregistrable`). ``template_parts``: every part is
    # drawn once, where a shape template puts it (a landmark rasteriser), never anywhere else;
    # ``always_drawn``: classes it draws on every image whatever the image shows. A pixel-wise
    # network declares neither: it can label any pixel any class.
    template_parts: bool = False
    always_drawn: tuple[str, ...] = ()

    @abstractmethod
    def segment(self, images: np.ndarray) -> SegmenterOutput:
        """Label uint8 images of shape (B, H, W, 3) at their own resolution."""


def clamp_image(images: torch.Tensor) -> torch.Tensor:
    """A generator image clamped to [-1, 1]: the one clamp every consumer applies (stored and
    displayed images through :func:`lineargan.cache.to_uint8`, a segmenter's input through
    :class:`lineargan.predictors.SegmenterPredictor`), so a segmenter sees the same pixels
    whether it labels a store's image or P(G(z)) inside SCS/SIE. Generators never clamp
    their own output: that would zero the gradient of every pixel beyond ±1."""
    return images.clamp(-1, 1)


def images_to_unit(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, H, W, 3) → float (B, 3, H, W) in [-1, 1], the inverse of
    :func:`lineargan.cache.to_uint8`, so a segmenter sees stored images exactly as the
    generator produced them (up to rounding)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


class DifferentiableSegmenter(Segmenter):
    """A segmenter with pixel logits differentiable w.r.t. the image.

    SCS and SIE optimise a latent through ``logits(G(z))``, so they need gradients, which a
    landmark rasteriser such as ``dlib-face68`` cannot give. Subclasses implement
    :meth:`logits` on the generator's own output convention (no uint8 round trip in the loop);
    :meth:`segment` then follows from it, so the same model also labels stored images. It
    has no detector of its own: every image counts as detected.
    """

    batch_size: int = 64

    @property
    def device(self) -> torch.device:
        """Where :meth:`segment` puts its inputs (override for a model that can move)."""
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> DifferentiableSegmenter:
        """Run on ``device`` from now on; returns self. A segmenter that cannot move refuses
        any device but its own (override for one that can)."""
        if torch.device(device) != self.device:
            raise LinearGanError(
                f"segmenter {self.name!r} runs on {self.device} only, not {device}",
                f"use device={str(self.device)!r} with this segmenter",
            )
        return self

    @abstractmethod
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, n_class, H, W) logits for float images (B, 3, H, W) in [-1, 1]."""

    def segment(self, images: np.ndarray) -> SegmenterOutput:
        """Argmax labels of :meth:`logits` for uint8 (B, H, W, 3) images, in batches."""
        out = [np.zeros((0, *images.shape[1:3]), np.uint8)]
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                x = images_to_unit(images[start : start + self.batch_size], self.device)
                out.append(self.logits(x).argmax(1).to(torch.uint8).cpu().numpy())
        return SegmenterOutput(labels=np.concatenate(out), detected=np.ones(len(images), bool))


class NetworkSegmenter(DifferentiableSegmenter):
    """A differentiable segmenter around one network, ``net``: it runs (and moves) where the
    network's weights are."""

    net: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> NetworkSegmenter:
        """Move the network (in place, like ``nn.Module.to``); returns self."""
        self.net.to(device)
        return self

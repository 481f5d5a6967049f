"""Semantic predictors P for SCS and SIE: anything that turns a generator's output into logits.

SCS (Algorithm 3) and SIE (Algorithm 2) back-propagate a loss on P(G(z)) to the latent z. The
paper plugs in either a few-shot LSE, which reads G's feature maps, or a pretrained
segmentation network, which reads G's image. Both are wrapped here behind one call,
``predictor(output, size) -> (B, n_class, size, size) logits``, so the algorithms never ask
which kind they hold.
"""

from __future__ import annotations

import torch
from torch import nn

from lineargan.errors import LinearGanError
from lineargan.extractors.base import SemanticExtractor, upsample
from lineargan.models.protocols import DifferentiableSegmenter, GeneratorOutput, clamp_image
from lineargan.store_policy import StorePolicy


class SemanticPredictor(nn.Module):
    """P of the paper: logits of G's output at a requested resolution, differentiable in z."""

    n_class: int
    label: str  # how tables and figures name it ("8-shot LSE", "UNet")

    def forward(self, output: GeneratorOutput, size: int) -> torch.Tensor:
        raise NotImplementedError


class ExtractorPredictor(SemanticPredictor):
    """A semantic extractor (few-shot or full LSE, NSE) reading G's feature maps.

    ``view`` (layer indices, policy) reads a raw generator's features the way the extractor's
    training store served them (a layer subset, capped); None: as they come.
    """

    def __init__(
        self,
        extractor: SemanticExtractor,
        label: str,
        view: tuple[list[int], StorePolicy] | None = None,
    ) -> None:
        super().__init__()
        self.extractor = extractor.eval()
        self.n_class = extractor.n_class
        self.label = label
        self.view = view

    def forward(self, output: GeneratorOutput, size: int) -> torch.Tensor:
        features = output.features
        if self.view is not None:
            index, policy = self.view
            features = policy.cap([features[i] for i in index])
        return self.extractor(features, size)


class SegmenterPredictor(SemanticPredictor):
    """A differentiable image segmenter (the baseline UNet, or a user's network) on G's image,
    clamped to [-1, 1] as every segmenter input is (stored images are clamped when quantised,
    so the segmenter sees in SCS/SIE what it saw in the store); its logits are resized to
    ``size`` (the logits, never the input image)."""

    def __init__(self, segmenter: DifferentiableSegmenter, label: str) -> None:
        super().__init__()
        if not isinstance(segmenter, DifferentiableSegmenter):
            name = getattr(segmenter, "name", "") or type(segmenter).__name__
            raise LinearGanError(
                f"segmenter {name!r} is not differentiable (no logits(images)), so it cannot "
                "be SCS/SIE's P",
                "use the baseline UNet, or a segmenter implementing DifferentiableSegmenter",
            )
        self.segmenter = segmenter
        # register the network (the segmenter itself, or the module it wraps) so that
        # .to(device) moves it and freeze() stops its weight gradients
        net = segmenter if isinstance(segmenter, nn.Module) else getattr(segmenter, "net", None)
        if isinstance(net, nn.Module):
            self.net = net.eval()
        elif hasattr(segmenter, "eval"):
            segmenter.eval()  # a user's network: batch statistics frozen, as in evaluation
        self.n_class = len(segmenter.class_names)
        self.label = label

    def forward(self, output: GeneratorOutput, size: int) -> torch.Tensor:
        return upsample(self.segmenter.logits(clamp_image(output.image)), size)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: SCS/SIE optimise the latent only, so gradients
    of G's and P's weights would be computed and thrown away."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module

"""The nonlinear baselines of Appx C.

NSE-1: every layer through three convolutions interleaved with ReLU (hidden width
(c_i + m) / 2), each result upsampled and summed like LSE. The paper calls it "a direct
generalization from LSE", and the authors' implementation uses 1×1 kernels: a per-pixel MLP
in place of LSE's per-pixel linear map. That is the default (``ksize=1``).
NSE-2: DCGAN-like refinement: every layer is embedded by conv+ReLU; a hidden map starts at the
first layer, is nearest-upsampled ×2 whenever the next layer is twice as large, revised by
conv+ReLU and summed with that layer's embedding; a final conv maps it to class logits, which
are bilinearly upsampled to the output. Figure 7 draws these convolutions as 3×3 (default).
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from lineargan.extractors.base import (
    LayerWeighting,
    LayerWeights,
    SemanticExtractor,
    split_param_groups,
    upsample,
)


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class NSE1(SemanticExtractor):
    kind = "NSE-1"

    def __init__(
        self,
        n_class: int,
        dims: list[int],
        ksize: int = 1,
        layer_weights: LayerWeighting = "none",
    ) -> None:
        super().__init__(n_class, dims)
        self.ksize = ksize
        self.layer_weights = layer_weights

        def block(d: int) -> nn.Sequential:
            mid = (d + n_class) // 2
            return nn.Sequential(
                _conv(d, mid, ksize),
                nn.ReLU(inplace=True),
                _conv(mid, mid, ksize),
                nn.ReLU(inplace=True),
                _conv(mid, n_class, ksize),
            )

        self.extractor = nn.ModuleList(block(d) for d in self.dims)
        self.weighting = LayerWeights(len(self.dims)) if layer_weights == "softplus" else None

    def init_args(self) -> dict:
        args = {**super().init_args(), "ksize": self.ksize}
        return args if self.weighting is None else {**args, "layer_weights": self.layer_weights}

    def param_groups(self, lr: float) -> list[dict]:
        return split_param_groups(self, self.weighting, lr)

    def layer_logits(self, features: list[torch.Tensor], size: int) -> list[torch.Tensor]:
        out = [upsample(block(x), size) for block, x in zip(self.extractor, features, strict=True)]
        if self.weighting is not None:
            out = [w * s for w, s in zip(self.weighting(), out, strict=True)]
        return out

    def forward(self, features: list[torch.Tensor], size: int) -> torch.Tensor:
        return torch.stack(self.layer_logits(features, size)).sum(0)


class NSE2(SemanticExtractor):
    kind = "NSE-2"

    def __init__(self, n_class: int, dims: list[int], ksize: int = 3) -> None:
        super().__init__(n_class, dims)
        self.ksize = ksize

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(_conv(cin, cout, ksize), nn.ReLU(inplace=True))

        self.extractor = nn.ModuleList(block(d, d) for d in self.dims)
        self.reviser = nn.ModuleList(block(a, b) for a, b in pairwise(self.dims))
        self.visualizer = _conv(self.dims[-1], n_class, ksize)
        # channels-last (NHWC) lets oneDNN run the 3×3 convolutions without layout
        # conversions: faster per training step on CPU (benchmarks/bench_pipeline.py, part 4)
        self.to(memory_format=torch.channels_last)

    def init_args(self) -> dict:
        return {**super().init_args(), "ksize": self.ksize}

    def forward(self, features: list[torch.Tensor], size: int) -> torch.Tensor:
        return self.refine(
            [x.contiguous(memory_format=torch.channels_last) for x in features], size
        )

    def refine(self, features: list[torch.Tensor], size: int) -> torch.Tensor:
        """The network itself, on features in whatever memory layout they come."""
        hidden = self.extractor[0](features[0])
        for i in range(1, len(features)):
            x = features[i]
            if hidden.shape[-1] != x.shape[-1]:
                hidden = F.interpolate(hidden, size=x.shape[-2:], mode="nearest")
            hidden = self.reviser[i - 1](hidden) + self.extractor[i](x)
        return upsample(self.visualizer(hidden), size)

"""The Linear Semantic Extractor (Sec 3.1, Eq. 1): S = Σ_i u↑(T_i x_i).

Each T_i is a bias-free 1×1 convolution. Because a 1×1 convolution commutes with bilinear
upsampling (Appx B), this equals T·X on the concatenated upsampled features (Eq. 2); the
forward pass applies T_i *before* upsampling, which is far cheaper at high resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from lineargan.extractors.base import (
    LayerWeighting,
    LayerWeights,
    SemanticExtractor,
    split_param_groups,
    upsample,
)


class LSE(SemanticExtractor):
    kind = "LSE"

    def __init__(
        self, n_class: int, dims: list[int], layer_weights: LayerWeighting = "none"
    ) -> None:
        super().__init__(n_class, dims)
        self.layer_weights = layer_weights
        self.extractor = nn.ModuleList(nn.Conv2d(d, n_class, 1, bias=False) for d in self.dims)
        self.weighting = LayerWeights(len(self.dims)) if layer_weights == "softplus" else None

    def init_args(self) -> dict:
        args = super().init_args()
        return args if self.weighting is None else {**args, "layer_weights": self.layer_weights}

    def param_groups(self, lr: float) -> list[dict]:
        return split_param_groups(self, self.weighting, lr)

    def layer_logits(self, features: list[torch.Tensor], size: int) -> list[torch.Tensor]:
        out = [upsample(conv(x), size) for conv, x in zip(self.extractor, features, strict=True)]
        if self.weighting is not None:
            out = [w * s for w, s in zip(self.weighting(), out, strict=True)]
        return out

    def forward(self, features: list[torch.Tensor], size: int) -> torch.Tensor:
        return torch.stack(self.layer_logits(features, size)).sum(0)

    def matrix(self) -> torch.Tensor:
        """T = [T_1 … T_{N-1}] as an (n_class × Σc_i) matrix (Eq. 2), layer weights folded in."""
        blocks = [conv.weight[:, :, 0, 0] for conv in self.extractor]
        if self.weighting is not None:
            blocks = [w * b for w, b in zip(self.weighting(), blocks, strict=True)]
        return torch.cat(blocks, dim=1)

"""The Linear Semantic Extractor (Sec 3.1, Eq. 1): S = Σ_i u↑(T_i x_i).

Each T_i is a bias-free 1×1 convolution. Because a 1×1 convolution commutes with bilinear
upsampling (Appx B), this equals T·X on the concatenated upsampled features (Eq. 2); the
forward pass applies T_i *before* upsampling, which is far cheaper at high resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from lineargan.extractors.base import SemanticExtractor, upsample


class LSE(SemanticExtractor):
    kind = "LSE"

    def __init__(self, n_class: int, dims: list[int]) -> None:
        super().__init__(n_class, dims)
        self.extractor = nn.ModuleList(nn.Conv2d(d, n_class, 1, bias=False) for d in self.dims)

    def layer_logits(self, features: list[torch.Tensor], size: int) -> list[torch.Tensor]:
        return [upsample(conv(x), size) for conv, x in zip(self.extractor, features, strict=True)]

    def forward(self, features: list[torch.Tensor], size: int) -> torch.Tensor:
        return torch.stack(self.layer_logits(features, size)).sum(0)

    def matrix(self) -> torch.Tensor:
        """T = [T_1 … T_{N-1}] as an (n_class × Σc_i) matrix (Eq. 2)."""
        return torch.cat([conv.weight[:, :, 0, 0] for conv in self.extractor], dim=1)

"""Bias + leaky ReLU + gain, the activation of every StyleGAN2 layer.

rosinality's ``op.fused_act`` fuses these three steps in a CUDA kernel; here they are three
element-wise PyTorch ops (cheap next to the convolutions they follow). The semantics are the
CUDA kernel's: ``negative_slope`` is honoured (the reference's CPU fallback silently
hard-codes 0.2, which only matters for a non-default slope).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

SQRT2 = math.sqrt(2.0)


def fused_leaky_relu(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    scale: float = SQRT2,
) -> torch.Tensor:
    """``leaky_relu(x + bias, negative_slope) * scale``, ``bias`` broadcast along dim 1.

    ``x`` is (B, C, ...) — (B, C) for the mapping network's dense layers, (B, C, H, W) for
    convolutions — and ``bias`` (C,) or None.
    """
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias followed by the scaled leaky ReLU.

    Its parameter is named ``bias`` as in the reference, so StyleGAN2 state dicts keep their
    ``...activate.bias`` keys.
    """

    def __init__(
        self, channel: int, bias: bool = True, negative_slope: float = 0.2, scale: float = SQRT2
    ) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)

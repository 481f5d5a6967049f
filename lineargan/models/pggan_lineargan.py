"""PGGAN from the authors' own port (AtlantixJJ/LinearGAN ``models/pggan_generator_network.py``).

Same network as :mod:`lineargan.models.pggan_genforce`, other weight names: a block keeps its
kernel in an ``nn.Conv2d`` (``layerN.conv.weight``) and its bias in a weight-scale layer
(``layerN.wscale.bias``); a fused up-conv stores ``layerN.weight`` as (k, k, in, out), the
TensorFlow order. Their converted files are plain state dicts (``lod`` included). z is
pixel-normalised once, by ``layer0``. Whether up-convs are fused is read from the key names.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lineargan.models.checkpoints import PORT_KEYS, read_generator_checkpoint
from lineargan.models.pggan_genforce import (
    WEIGHTS_FILE,
    PGConvBlock,
    PGGANGenerator,
    build_pggan,
)
from lineargan.models.registry import register_generator


class WScaleBias(nn.Module):
    """The port's ``WScaleLayer``: it only holds the bias (the scale is a constant)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class PortConvBlock(PGConvBlock):
    """The port's ``ConvBlock`` weights: ``conv.weight`` or fused ``weight``, ``wscale.bias``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, **kw) -> None:
        super().__init__(cin, cout, kernel, **kw)
        if self.fused:
            self.weight = nn.Parameter(torch.randn(kernel, kernel, cin, cout))
        else:
            self.conv = nn.Conv2d(cin, cout, kernel, padding=self.padding, bias=False)
        self.wscale = WScaleBias(cout)

    def kernel(self) -> torch.Tensor:
        if self.fused:
            return self.weight.permute(2, 3, 0, 1) * self.scale
        return self.conv.weight * self.scale

    def bias_vector(self) -> torch.Tensor:
        return self.wscale.bias


@register_generator("pggan-lineargan")
def pggan_lineargan(
    checkpoint: str | Path | None = None,
    checkpoint_key: str | None = None,
    final_tanh: bool = False,
) -> PGGANGenerator:
    """PGGAN from a state dict converted by the authors' code (e.g. ``pggan_celebahq.pth``).
    Depth, widths, z size and fused up-convs come from the weights."""
    ckpt = read_generator_checkpoint(
        checkpoint,
        generator="pggan-lineargan",
        what=WEIGHTS_FILE,
        keys=PORT_KEYS,
        checkpoint_key=checkpoint_key,
    )
    model = build_pggan(
        ckpt.state,
        ckpt.source,
        weight_key="conv.weight",
        fused_scale="layer2.weight" in ckpt.state,
        final_tanh=bool(final_tanh),
        make_block=PortConvBlock,
        pre_normalize=False,
    )
    model.name, model.weights_sha256 = "pggan-lineargan", ckpt.weights_id
    return model

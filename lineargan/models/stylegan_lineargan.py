"""StyleGAN (v1) from the authors' own port (AtlantixJJ/LinearGAN
``models/stylegan_generator_network.py``).

Same network as :mod:`lineargan.models.stylegan_genforce`, other weight names: dense layers
keep ``fc.weight`` and ``wscale.bias``; a synthesis layer keeps its kernel in ``conv.weight``
(or a fused ``weight`` stored (k, k, in, out), the TensorFlow order) and everything after the
convolution under ``epilogue`` (``bias``, ``apply_noise.*``, ``style_mod.dense.*``); ToRGB is
``output{i}.conv.weight`` and ``output{i}.bias``. Their converted files are plain state dicts
without the derived ``truncation.truncation`` buffer (it is dropped if present: truncation is
the ``truncation`` / ``truncation_layers`` options here). Fused up-convs are read from the keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lineargan.models.checkpoints import (
    BAKED_TRUNCATION_KEY,
    PORT_KEYS,
    read_generator_checkpoint,
)
from lineargan.models.pggan_genforce import WEIGHTS_FILE
from lineargan.models.pggan_lineargan import WScaleBias
from lineargan.models.registry import register_generator
from lineargan.models.style_latents import LatentSpace
from lineargan.models.stylegan_genforce import (
    TRUNCATION_LAYERS,
    TRUNCATION_PSI,
    Dense,
    NoiseInput,
    StyleGANGenerator,
    StyleLayer,
    StyleLayout,
    ToRGB,
    build_stylegan,
)


class PortDenseWeights(nn.Module):
    """The port's ``DenseBlock`` weights: ``fc.weight`` (a bias-free Linear), ``wscale.bias``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, cout, bias=False)
        self.wscale = WScaleBias(cout)


class PortDense(Dense):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin)
        self.fc = nn.Linear(cin, cout, bias=False)
        self.wscale = WScaleBias(cout)

    def weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc.weight, self.wscale.bias


class StyleMod(nn.Module):
    """``style_mod``: holds the affine map of w as ``dense.fc.weight`` / ``dense.wscale.bias``."""

    def __init__(self, w_dim: int, channels: int) -> None:
        super().__init__()
        self.dense = PortDenseWeights(w_dim, 2 * channels)


class Epilogue(nn.Module):
    """``epilogue``: ``bias``, ``apply_noise`` and ``style_mod`` of one synthesis layer."""

    def __init__(self, res: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.apply_noise = NoiseInput(res, channels)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style_mod = StyleMod(w_dim, channels)


class PortStyleLayer(StyleLayer):
    """The port's ``FirstConvBlock`` / ``UpConvBlock`` / ``ConvBlock`` weights."""

    def __init__(self, cin: int, cout: int, res: int, w_dim: int, **kw) -> None:
        super().__init__(cin, cout, res, w_dim, **kw)
        if self.is_const:
            self.const = nn.Parameter(torch.ones(1, cout, res, res))
        elif self.fused:
            self.weight = nn.Parameter(torch.randn(3, 3, cin, cout))
        else:
            self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.epilogue = Epilogue(res, cout, w_dim)

    def kernel(self) -> torch.Tensor:
        if self.fused:
            return self.weight.permute(2, 3, 0, 1) * self.conv_scale
        return self.conv.weight * self.conv_scale

    def const_input(self) -> torch.Tensor:
        return self.const

    def noise_input(self) -> NoiseInput:
        return self.epilogue.apply_noise

    def bias_vector(self) -> torch.Tensor:
        return self.epilogue.bias

    def style_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        dense = self.epilogue.style_mod.dense
        return dense.fc.weight, dense.wscale.bias


class PortToRGB(ToRGB):
    """The port's ``LastConvBlock``: ``conv.weight`` and ``bias``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(cout))

    def weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv.weight, self.bias


PORT_LAYOUT = StyleLayout(
    dense=PortDense,
    layer=PortStyleLayer,
    to_rgb=PortToRGB,
    dense_weight="mapping.dense{}.fc.weight",
    conv_weight="synthesis.layer{}.conv.weight",
    rgb_weight="synthesis.output{}.conv.weight",
    style_weight="synthesis.layer{}.epilogue.style_mod.dense.fc.weight",
)


@register_generator("stylegan-lineargan")
def stylegan_lineargan(
    checkpoint: str | Path | None = None,
    checkpoint_key: str | None = None,
    latent_space: LatentSpace = "trunc-wp",
    truncation: float = TRUNCATION_PSI,
    truncation_layers: int = TRUNCATION_LAYERS,
    randomize_noise: bool = False,
    final_tanh: bool = False,
) -> StyleGANGenerator:
    """StyleGAN from a state dict converted by the authors' code (e.g. ``stylegan_ffhq.pth``).
    Depth, widths, z/w sizes, mapping depth and fused up-convs come from the weights."""
    ckpt = read_generator_checkpoint(
        checkpoint,
        generator="stylegan-lineargan",
        what=WEIGHTS_FILE,
        keys=PORT_KEYS,
        checkpoint_key=checkpoint_key,
    )
    # a derived buffer, dropped if present: the truncation options say it (module docstring)
    state = {k: v for k, v in ckpt.state.items() if k != BAKED_TRUNCATION_KEY}
    model = build_stylegan(
        state,
        ckpt.source,
        PORT_LAYOUT,
        lambda i: f"synthesis.layer{2 * i}.weight" in state,
        latent_space=latent_space,
        truncation=float(truncation),
        truncation_layers=int(truncation_layers),
        randomize_noise=bool(randomize_noise),
        final_tanh=bool(final_tanh),
    )
    model.name, model.weights_sha256 = "stylegan-lineargan", ckpt.weights_id
    return model

"""StyleGAN (v1, Karras et al. 2019) from a genforce/genforce checkpoint.

genforce's ``models/stylegan_generator.py`` has three parts, kept here under the same names so
its state dicts load unchanged: ``mapping`` (pixel-normalised z through 8 dense layers with
equalised lr and a 0.01 lr multiplier → w), ``truncation`` (the buffer ``w_avg``) and
``synthesis``: per resolution a first layer (a learned constant at 4×4, else upsample + conv +
3×3 blur) and a second conv, each followed by per-pixel noise, bias, leaky ReLU, instance norm
and the AdaIN style modulation from its own w+ entry; a 1×1 ``output{i}`` (ToRGB) per
resolution, of which only the last is used after training (``lod`` 0).

Latents follow :class:`~lineargan.models.style_latents.StyleLatents`: z, w, wp or trunc-wp
(the authors' default, ψ = 0.7 on the first 8 w+ entries, their ``model_settings.py``). Noise
is the checkpoint's fixed noise unless ``randomize_noise`` (the authors' default is fixed
too), so the same latent always gives the same image.

The feature map of a block is what the authors' port (AtlantixJJ/LinearGAN
``models/stylegan_generator_network.py``) returns with ``generate_feature=True``: the output of
the block's second layer, after its style modulation — one map per resolution.

The network is written once for both weight layouts; a layout only names and stores the
weights (genforce's here, the authors' in :mod:`lineargan.models.stylegan_lineargan`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.checkpoints import GENFORCE_KEYS, read_generator_checkpoint
from lineargan.models.pggan_genforce import (
    INIT_RES,
    WEIGHTS_FILE,
    BlockGenerator,
    block_names,
    check_lod,
    count_indexed,
    fused_upconv,
    pixel_norm,
    tensor_shape,
    upsample2x,
)
from lineargan.models.protocols import LatentWeights
from lineargan.models.registry import register_generator
from lineargan.models.style_latents import LatentSpace, StyleLatents
from lineargan.models.weights import load_into

SQRT2 = math.sqrt(2.0)
MAPPING_LR_MUL = 0.01  # StyleGAN's mapping network learns 100× slower (equalised lr)
AUTO_FUSED_MIN_RES = 128  # fused_scale="auto": transposed convs from 128 px up
TRUNCATION_PSI, TRUNCATION_LAYERS = 0.7, 8  # the authors' STYLEGAN_TRUNCATION_* settings


# --- weight holders whose names both layouts share -----------------------------------------


class NoiseInput(nn.Module):
    """``apply_noise``: a fixed noise map (buffer ``noise``) and per-channel ``weight``."""

    def __init__(self, res: int, channels: int) -> None:
        super().__init__()
        self.register_buffer("noise", torch.randn(1, 1, res, res))
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, randomize: bool) -> torch.Tensor:
        noise = torch.randn_like(x[:, :1]) if randomize else self.noise
        return x + noise * self.weight.view(1, -1, 1, 1)


class BlurKernel(nn.Module):
    """``blur``: the normalised [1, 2, 1]ᵀ[1, 2, 1] depthwise kernel (buffer ``kernel``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = torch.outer(k, k) / 16.0
        self.register_buffer("kernel", k.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, padding=1, groups=x.shape[1])


def instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x / torch.sqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + eps)


# --- the network, layout-independent --------------------------------------------------------


class StyleLayer(nn.Module):
    """One synthesis layer; subclasses say where its weights live.

    const (first layer) or (upsample →) 3×3 conv (→ blur when upsampling); then noise, bias,
    leaky ReLU, instance norm, and ``x * (1 + scale) + shift`` with (scale, shift) an affine
    map of w.
    """

    def __init__(
        self, cin: int, cout: int, res: int, w_dim: int, *, const=False, upsample=False, fused=False
    ) -> None:
        super().__init__()
        self.channels, self.is_const = cout, const
        self.upsample, self.fused = upsample, upsample and fused
        self.conv_scale = SQRT2 / math.sqrt(cin * 9)
        self.style_scale = 1.0 / math.sqrt(w_dim)
        if self.upsample:  # both layouts name it ``blur`` (buffer ``blur.kernel``)
            self.blur = BlurKernel(cout)

    def kernel(self) -> torch.Tensor:
        """Scaled kernel: (out, in, 3, 3), or (in, out, 3, 3) when fused."""
        raise NotImplementedError

    def const_input(self) -> torch.Tensor:
        raise NotImplementedError

    def noise_input(self) -> NoiseInput:
        raise NotImplementedError

    def bias_vector(self) -> torch.Tensor:
        raise NotImplementedError

    def style_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled (weight (2C, w_dim), bias (2C,)) of the style affine map."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor | None, w: torch.Tensor, randomize_noise: bool = False):
        if self.is_const:
            x = self.const_input().expand(len(w), -1, -1, -1)
        else:
            assert x is not None
            if self.fused:
                x = fused_upconv(x, self.kernel())
            else:
                x = upsample2x(x) if self.upsample else x
                x = F.conv2d(x, self.kernel(), padding=1)
            x = self.blur(x) if self.upsample else x
        x = self.noise_input()(x, randomize_noise)
        x = F.leaky_relu(x + self.bias_vector().view(1, -1, 1, 1), 0.2)
        x = instance_norm(x)
        weight, bias = self.style_affine()
        style = F.linear(w, weight * self.style_scale, bias).view(len(w), 2, -1, 1, 1)
        return x * (style[:, 0] + 1) + style[:, 1]


class ToRGB(nn.Module):
    """``output{i}``: a 1×1 conv (gain 1, equalised lr) plus bias; no activation."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(cin)

    def weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight_bias()
        return F.conv2d(x, weight * self.scale, bias)


class Dense(nn.Module):
    """A mapping layer: linear (equalised lr, lr multiplier 0.01) and leaky ReLU."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.scale = SQRT2 / math.sqrt(cin) * MAPPING_LR_MUL

    def weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight_bias()
        return F.leaky_relu(F.linear(x, weight * self.scale, bias * MAPPING_LR_MUL), 0.2)


@dataclass(frozen=True)
class StyleLayout:
    """How one checkpoint family names the weights: holder classes and the keys read to infer
    the architecture (``{}`` is a layer or block index)."""

    dense: Callable[[int, int], Dense]
    layer: Callable[..., StyleLayer]
    to_rgb: Callable[[int, int], ToRGB]
    dense_weight: str
    conv_weight: str
    rgb_weight: str
    style_weight: str


@dataclass(frozen=True)
class StyleArch:
    """Shapes of one StyleGAN, all read from its weights."""

    channels: tuple[int, ...]  # width of each resolution block, 4×4 first
    fused: tuple[bool, ...]  # per block: is its up-conv a transposed conv
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_fmaps: int = 512
    image_channels: int = 3


class MappingNet(nn.Module):
    """``mapping``: pixel-normalised z through ``dense0..`` → w."""

    def __init__(self, arch: StyleArch, layout: StyleLayout) -> None:
        super().__init__()
        self.num_layers = arch.mapping_layers
        for i in range(arch.mapping_layers):
            cin = arch.z_dim if i == 0 else arch.mapping_fmaps
            cout = arch.w_dim if i == arch.mapping_layers - 1 else arch.mapping_fmaps
            self.add_module(f"dense{i}", layout.dense(cin, cout))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = pixel_norm(z)
        for i in range(self.num_layers):
            w = getattr(self, f"dense{i}")(w)
        return w


class Truncation(nn.Module):
    """``truncation``: holds ``w_avg``, the running mean of w used by the truncation trick."""

    def __init__(self, w_dim: int) -> None:
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(w_dim))


class SynthesisNet(nn.Module):
    """``synthesis``: buffer ``lod``, ``layer0..`` (two per block) and ``output{i}``."""

    def __init__(self, arch: StyleArch, layout: StyleLayout) -> None:
        super().__init__()
        self.register_buffer("lod", torch.zeros(()))
        for i, width in enumerate(arch.channels):
            res = INIT_RES << i
            if i == 0:
                first = layout.layer(width, width, res, arch.w_dim, const=True)
            else:
                prev = arch.channels[i - 1]
                first = layout.layer(
                    prev, width, res, arch.w_dim, upsample=True, fused=arch.fused[i]
                )
            self.add_module(f"layer{2 * i}", first)
            self.add_module(f"layer{2 * i + 1}", layout.layer(width, width, res, arch.w_dim))
            self.add_module(f"output{i}", layout.to_rgb(width, arch.image_channels))


class StyleGANGenerator(BlockGenerator):
    """A trained StyleGAN taking latents of one :class:`StyleLatents` space."""

    def __init__(
        self,
        arch: StyleArch,
        layout: StyleLayout,
        latent_space: LatentSpace = "trunc-wp",
        truncation: float = TRUNCATION_PSI,
        truncation_layers: int = TRUNCATION_LAYERS,
        randomize_noise: bool = False,
        final_tanh: bool = False,
    ) -> None:
        super().__init__()
        self.arch, self.num_blocks = arch, len(arch.channels)
        self.z_dim = arch.z_dim
        self.resolution = INIT_RES << (self.num_blocks - 1)
        self.layer_names = block_names(self.num_blocks)
        self.style = StyleLatents(
            latent_space, arch.z_dim, arch.w_dim, 2 * self.num_blocks, truncation, truncation_layers
        )
        self.latent_space, self.latent_dim = latent_space, self.style.dim
        self.latent_vectors = self.style.vectors
        self.randomize_noise, self.final_tanh = randomize_noise, final_tanh
        self.mapping = MappingNet(arch, layout)
        self.truncation = Truncation(arch.w_dim)
        self.synthesis = SynthesisNet(arch, layout)

    def iter_latents(self, n: int, seed: int, chunk_size: int) -> Iterator[torch.Tensor]:
        """Standard-normal z from the seeded stream (as the base class draws them), mapped to
        this adapter's latent space."""
        gen = torch.Generator().manual_seed(seed)
        device = self.truncation.w_avg.device
        for start in range(0, n, chunk_size):
            z = torch.randn(min(chunk_size, n - start), self.z_dim, generator=gen)
            with torch.no_grad():
                latents = self.style.sample(z.to(device), self.mapping, self.truncation.w_avg)
            yield latents.cpu()

    def _blocks(self, latents: torch.Tensor, num_blocks: int) -> list[torch.Tensor]:
        """Feature maps of the first ``num_blocks`` blocks (the rest is never run)."""
        wp = self.style.to_wp(latents, self.mapping)
        x, features = None, []
        for i in range(num_blocks):
            for k in (2 * i, 2 * i + 1):
                x = getattr(self.synthesis, f"layer{k}")(x, wp[:, k], self.randomize_noise)
            features.append(x)
        return features

    def _to_rgb(self, block: int) -> nn.Module:
        return getattr(self.synthesis, f"output{block}")

    def latent_weights(self, module: str | None = None) -> LatentWeights:
        """Every synthesis layer's style affine (scale and shift rows, run-time scaled): layer
        k reads w+ entry k."""
        weights = []
        for k in range(self.style.num_layers):
            layer = getattr(self.synthesis, f"layer{k}")
            weights.append(layer.style_affine()[0].detach() * layer.style_scale)
        return LatentWeights(tuple(weights), per_layer=True)


def infer_arch(
    state: Mapping[str, torch.Tensor],
    layout: StyleLayout,
    source: str,
    fused: Callable[[int], bool],
) -> StyleArch:
    """The architecture a state dict of ``layout`` describes; ``fused(i)`` for block i ≥ 1."""
    num_blocks = count_indexed(state, layout.rgb_weight)
    mapping_layers = count_indexed(state, layout.dense_weight)
    if num_blocks == 0 or mapping_layers == 0:
        missing = layout.rgb_weight if num_blocks == 0 else layout.dense_weight
        raise CheckpointError(
            f"checkpoint {source} is not a StyleGAN generator of this layout "
            f"(no {missing.format(0)!r})",
            "pass a StyleGAN generator checkpoint or choose the matching generator name",
        )
    if "mapping.label_weight" in state:
        raise CheckpointError(
            f"checkpoint {source} is a class-conditional StyleGAN",
            "pass an unconditional generator; conditional ones are not supported",
        )
    dense0 = tensor_shape(state, layout.dense_weight.format(0), source)
    return StyleArch(
        channels=tuple(
            int(tensor_shape(state, layout.conv_weight.format(2 * i + 1), source)[0])
            for i in range(num_blocks)
        ),
        fused=tuple(i > 0 and fused(i) for i in range(num_blocks)),
        z_dim=int(dense0[1]),
        w_dim=int(tensor_shape(state, layout.style_weight.format(0), source)[1]),
        mapping_layers=mapping_layers,
        mapping_fmaps=int(dense0[0]),
        image_channels=int(tensor_shape(state, layout.rgb_weight.format(0), source)[0]),
    )


def build_stylegan(
    state: dict[str, torch.Tensor],
    source: str,
    layout: StyleLayout,
    fused: Callable[[int], bool],
    **options,
) -> StyleGANGenerator:
    """A StyleGAN shaped after ``state``, weights loaded; ``options`` go to the adapter."""
    arch = infer_arch(state, layout, source, fused)
    check_lod(state, "synthesis.lod", source)
    model = StyleGANGenerator(arch, layout, **options)
    load_into(model, state, source)
    return model


# --- genforce's weight names ----------------------------------------------------------------


class GenforceStyleLayer(StyleLayer):
    """genforce ``ConvBlock``: ``const`` or ``weight`` (out, in, 3, 3, even when fused),
    ``bias``, ``apply_noise.*``, ``style.weight`` / ``style.bias``, ``blur.kernel``."""

    def __init__(self, cin: int, cout: int, res: int, w_dim: int, **kw) -> None:
        super().__init__(cin, cout, res, w_dim, **kw)
        if self.is_const:
            self.const = nn.Parameter(torch.ones(1, cout, res, res))
        else:
            self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.apply_noise = NoiseInput(res, cout)
        self.style = nn.Linear(w_dim, 2 * cout)

    def kernel(self) -> torch.Tensor:
        kernel = self.weight * self.conv_scale
        return kernel.transpose(0, 1) if self.fused else kernel

    def const_input(self) -> torch.Tensor:
        return self.const

    def noise_input(self) -> NoiseInput:
        return self.apply_noise

    def bias_vector(self) -> torch.Tensor:
        return self.bias

    def style_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.style.weight, self.style.bias


class GenforceToRGB(ToRGB):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin)
        self.weight = nn.Parameter(torch.randn(cout, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(cout))

    def weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight, self.bias


class GenforceDense(Dense):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin)
        self.weight = nn.Parameter(torch.randn(cout, cin) / MAPPING_LR_MUL)
        self.bias = nn.Parameter(torch.zeros(cout))

    def weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight, self.bias


GENFORCE_LAYOUT = StyleLayout(
    dense=GenforceDense,
    layer=GenforceStyleLayer,
    to_rgb=GenforceToRGB,
    dense_weight="mapping.dense{}.weight",
    conv_weight="synthesis.layer{}.weight",
    rgb_weight="synthesis.output{}.weight",
    style_weight="synthesis.layer{}.style.weight",
)


def genforce_fused(fused_scale: bool | str) -> Callable[[int], bool]:
    """genforce stores fused and plain up-conv weights alike, so the choice is an option:
    True, False, or "auto" (fused from 128 px up, as the official StyleGANs)."""
    if fused_scale == "auto":
        return lambda i: (INIT_RES << i) >= AUTO_FUSED_MIN_RES
    if isinstance(fused_scale, bool):
        return lambda i: fused_scale
    raise LinearGanError(
        f"fused_scale {fused_scale!r} is not true, false or 'auto'",
        "use fused_scale 'auto' (the official models) unless the model was trained otherwise",
    )


@register_generator("stylegan-genforce")
def stylegan_genforce(
    checkpoint: str | Path | None = None,
    checkpoint_key: str | None = None,
    latent_space: LatentSpace = "trunc-wp",
    truncation: float = TRUNCATION_PSI,
    truncation_layers: int = TRUNCATION_LAYERS,
    randomize_noise: bool = False,
    fused_scale: bool | str = "auto",
    final_tanh: bool = False,
) -> StyleGANGenerator:
    """StyleGAN from a genforce checkpoint (``generator_smooth`` first, then ``generator``, or
    a bare state dict). Depth, widths, z/w sizes and mapping depth come from the weights."""
    fused = genforce_fused(fused_scale)
    ckpt = read_generator_checkpoint(
        checkpoint,
        generator="stylegan-genforce",
        what=WEIGHTS_FILE,
        keys=GENFORCE_KEYS,
        checkpoint_key=checkpoint_key,
    )
    model = build_stylegan(
        ckpt.state,
        ckpt.source,
        GENFORCE_LAYOUT,
        fused,
        latent_space=latent_space,
        truncation=float(truncation),
        truncation_layers=int(truncation_layers),
        randomize_noise=bool(randomize_noise),
        final_tanh=bool(final_tanh),
    )
    model.name, model.weights_sha256 = "stylegan-genforce", ckpt.weights_id
    return model

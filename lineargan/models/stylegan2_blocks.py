"""StyleGAN2 (config F) layers shared by the genforce and the authors' checkpoint layouts.

genforce/genforce ``models/stylegan2_generator.py`` and the authors' port (AtlantixJJ/LinearGAN
``models/stylegan2_generator_network.py``) compute the same function with the same module tree
(``mapping.dense{i}``, ``truncation.w_avg``, ``synthesis.early_layer`` / ``layer{i}`` /
``output{k}`` / ``upsample``); they differ only in how two kinds of weights are stored:

* genforce keeps conv weights as ``(out, in, k, k)`` and dense weights as ``<name>.weight``;
* the authors keep conv weights in TensorFlow order ``(k, k, in, out)`` and dense weights in an
  ``nn.Linear`` called ``fc`` (``<name>.fc.weight``, ``(out, in)``).

So one implementation serves both, with a ``layout`` switch that only changes parameter storage:
a checkpoint then loads with a strict ``load_state_dict`` under its own key names, and an error
names the key as the user's file spells it. Both references apply equalised learning rate at
run time (weights scaled by ``gain / sqrt(fan_in) * lr_mul``), add the style bias of 1, fuse
modulation with a grouped convolution and add the *fixed* noise buffer unless noise is
randomised; all of that is reproduced here. The FIR filters are plain convolutions with the
``kernel`` buffers stored in the checkpoints, so no compiled op is needed.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Layout = Literal["genforce", "lineargan"]
LAYOUTS: tuple[Layout, ...] = ("genforce", "lineargan")
Architecture = Literal["skip", "origin"]

MAPPING_LR_MUL = 0.01  # both references' mapping network learning-rate multiplier
LRELU_GAIN = math.sqrt(2.0)
INIT_RES = 4


def block_resolution(block: int) -> int:
    """Resolution of synthesis block ``block`` (block 0 is the 4×4 constant)."""
    return INIT_RES * 2**block


def layer_resolution(layer: int) -> int:
    """Resolution of conv ``layer{i}``: layer 0 is 4×4, layers 2b-1 and 2b are block b's."""
    return block_resolution((layer + 1) // 2)


def fmaps_channels(resolution: int, fmaps_base: int = 32 << 10, fmaps_max: int = 512) -> list[int]:
    """Per-block channel widths ``min(fmaps_base // res, fmaps_max)``, both references' rule."""
    n_blocks = int(math.log2(resolution // INIT_RES)) + 1
    return [min(fmaps_base // block_resolution(b), fmaps_max) for b in range(n_blocks)]


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


class PixelNorm(nn.Module):
    """z / sqrt(mean(z²) + 1e-8), the mapping network's input normalisation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class Dense(nn.Module):
    """Fully connected layer with run-time weight scaling, an optional constant added bias
    (1.0 for the style affine, so styles start around 1) and an optional leaky ReLU."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        layout: Layout,
        *,
        lr_mul: float = 1.0,
        bias_init: float = 0.0,
        activate: bool = True,
    ) -> None:
        super().__init__()
        # stored pre-divided by lr_mul, as both references initialise them
        weight = torch.randn(out_dim, in_dim) / lr_mul
        if layout == "lineargan":
            self.fc = nn.Linear(in_dim, out_dim, bias=False)
            with torch.no_grad():
                self.fc.weight.copy_(weight)
        else:
            self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.layout = layout
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.bias_init = bias_init
        self.activate = activate

    def matrix(self) -> torch.Tensor:
        """The stored (out, in) weight, whichever layout holds it."""
        return self.fc.weight if self.layout == "lineargan" else self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x.flatten(1), self.matrix() * self.scale, self.bias * self.lr_mul)
        x = x + self.bias_init
        return _lrelu(x) if self.activate else x


class FirFilter(nn.Module):
    """Depthwise FIR with the [1, 3, 3, 1] kernel, optionally after 2× zero-insertion.

    ``kernel`` is a buffer (1, 1, 4, 4) because both references store it in their state dicts;
    ``pad`` is (left, right, top, bottom) as ``F.pad`` reads it. With ``up=2`` and pad (2, 1)
    it is the skip branch's image upsampler; with ``up=1``, pad 1 and gain 4 it is the blur
    after a transposed stride-2 convolution.
    """

    def __init__(self, up: int, pad: tuple[int, int, int, int], gain: float) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        kernel = torch.outer(taps, taps)
        self.register_buffer("kernel", (kernel / kernel.sum() * gain)[None, None])
        self.up = up
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.up > 1:
            grid = x.new_zeros(b, c, h, self.up, w, self.up)
            grid[:, :, :, 0, :, 0] = x
            x = grid.reshape(b, c, h * self.up, w * self.up)
        x = F.pad(x.reshape(b * c, 1, x.shape[2], x.shape[3]), self.pad)
        x = F.conv2d(x, self.kernel.to(x.dtype))  # correlation, as both references
        return x.reshape(b, c, x.shape[2], x.shape[3])


class ModulatedConv(nn.Module):
    """Style-modulated (and demodulated) conv, then noise, bias and leaky ReLU.

    The returned activation (after noise, bias and ``lrelu * sqrt(2)``) is what the authors
    collect as the layer's feature map. ``up`` makes it the transposed stride-2 conv + blur
    that opens each block; the ToRGB layers are 1×1, not demodulated, noiseless and linear.
    """

    def __init__(
        self,
        in_c: int,
        out_c: int,
        resolution: int,
        w_dim: int,
        layout: Layout,
        *,
        kernel_size: int = 3,
        up: bool = False,
        demodulate: bool = True,
        add_noise: bool = True,
        activate: bool = True,
    ) -> None:
        super().__init__()
        k = kernel_size
        shape = (k, k, in_c, out_c) if layout == "lineargan" else (out_c, in_c, k, k)
        self.weight = nn.Parameter(torch.randn(*shape))
        self.style = Dense(w_dim, in_c, layout, bias_init=1.0, activate=False)
        self.bias = nn.Parameter(torch.zeros(out_c))
        if up:
            # (k-1) output rows of the transposed conv are trimmed by the blur: pad 1 each side
            self.filter = FirFilter(up=1, pad=(1, 1, 1, 1), gain=4.0)
        if add_noise:
            self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros(()))
        self.layout = layout
        self.in_c, self.out_c, self.k, self.res = in_c, out_c, k, resolution
        self.scale = 1.0 / math.sqrt(in_c * k * k)
        self.up, self.demodulate, self.add_noise, self.activate = (
            up,
            demodulate,
            add_noise,
            activate,
        )

    def kernel(self) -> torch.Tensor:
        """The stored weight as (out, in, k, k), scaled."""
        w = self.weight.permute(3, 2, 0, 1) if self.layout == "lineargan" else self.weight
        return w * self.scale

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, randomize_noise: bool = False
    ) -> torch.Tensor:
        batch = x.shape[0]
        style = self.style(w)  # (B, in_c)
        weight = self.kernel()[None] * style[:, None, :, None, None]  # (B, out, in, k, k)
        if self.demodulate:
            norm = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + 1e-8)
            weight = weight * norm[:, :, None, None, None]
        # one grouped conv for the whole batch: sample b's kernels act on its own channels
        x = x.reshape(1, batch * self.in_c, x.shape[2], x.shape[3])
        if self.up:
            # a transposed conv correlates with the flipped kernel; group b maps in → out
            weight = weight.flip(3, 4).transpose(1, 2)
            weight = weight.reshape(batch * self.in_c, self.out_c, self.k, self.k)
            x = F.conv_transpose2d(x, weight, stride=2, groups=batch)
            x = self.filter(x)
        else:
            weight = weight.reshape(batch * self.out_c, self.in_c, self.k, self.k)
            x = F.conv2d(x, weight, padding=self.k // 2, groups=batch)
        x = x.reshape(batch, self.out_c, self.res, self.res)
        if self.add_noise:
            noise = (
                torch.randn(batch, 1, self.res, self.res, device=x.device, dtype=x.dtype)
                if randomize_noise
                else self.noise
            )
            x = x + noise * self.noise_strength
        x = x + self.bias.view(1, -1, 1, 1)
        return _lrelu(x) if self.activate else x


class ConstInput(nn.Module):
    """The learned 4×4 constant every image starts from."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.randn(1, channels, INIT_RES, INIT_RES))

    def forward(self, batch: int) -> torch.Tensor:
        return self.const.expand(batch, -1, -1, -1)


class MappingNetwork(nn.Module):
    """z → w: pixel norm, then ``num_layers`` dense layers with lr multiplier 0.01."""

    def __init__(
        self, z_dim: int, w_dim: int, hidden: int, num_layers: int, layout: Layout
    ) -> None:
        super().__init__()
        self.norm = PixelNorm()
        dims = [z_dim] + [hidden] * (num_layers - 1) + [w_dim]
        for i in range(num_layers):
            self.add_module(f"dense{i}", Dense(dims[i], dims[i + 1], layout, lr_mul=MAPPING_LR_MUL))
        self.num_layers = num_layers

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.norm(z)
        for i in range(self.num_layers):
            w = getattr(self, f"dense{i}")(w)
        return w


class WAverage(nn.Module):
    """Holds ``w_avg`` (the tracked mean w) under the references' name ``truncation``.

    The truncation itself lives in :class:`~lineargan.models.style_latents.StyleLatents`,
    so psi and the number of truncated layers are options rather than baked-in buffers.
    """

    def __init__(self, w_dim: int) -> None:
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(w_dim))


class Synthesis(nn.Module):
    """w+ → (feature map of every conv layer, image).

    Block 0 is the constant and ``layer0``; block b ≥ 1 is the upsampling ``layer{2b-1}`` and
    ``layer{2b}``. ``skip`` adds a ToRGB ``output{b}`` per block whose image is upsampled and
    summed; ``origin`` has only the last block's ToRGB. Layer i reads ``wp[:, i]`` and the
    ToRGB after layer 2b reads ``wp[:, 2b + 1]``, as in both references.
    """

    def __init__(
        self,
        channels: list[int],
        w_dim: int,
        layout: Layout,
        architecture: Architecture = "skip",
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        self.n_blocks = len(channels)
        self.num_layers = 2 * self.n_blocks  # w+ entries read
        self.n_conv = self.num_layers - 1
        self.architecture = architecture
        self.early_layer = ConstInput(channels[0])
        for b, width in enumerate(channels):
            res = block_resolution(b)
            if b > 0:
                self.add_module(
                    f"layer{2 * b - 1}",
                    ModulatedConv(channels[b - 1], width, res, w_dim, layout, up=True),
                )
            self.add_module(f"layer{2 * b}", ModulatedConv(width, width, res, w_dim, layout))
            if architecture == "skip" or b == self.n_blocks - 1:
                self.add_module(
                    f"output{b}",
                    ModulatedConv(
                        width,
                        image_channels,
                        res,
                        w_dim,
                        layout,
                        kernel_size=1,
                        demodulate=False,
                        add_noise=False,
                        activate=False,
                    ),
                )
        if architecture == "skip":
            self.upsample = FirFilter(up=2, pad=(2, 1, 2, 1), gain=4.0)

    def forward(
        self,
        wp: torch.Tensor,
        randomize_noise: bool = False,
        last_layer: int | None = None,
        with_image: bool = True,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Feature maps of layers 0..``last_layer`` (all by default) and, when ``with_image``,
        the image; without it the ToRGB path is skipped, so features alone cost less."""
        last = self.n_conv - 1 if last_layer is None else last_layer
        x = self.early_layer(wp.shape[0])
        features: list[torch.Tensor] = []
        image = None
        for i in range(last + 1):
            x = getattr(self, f"layer{i}")(x, wp[:, i], randomize_noise)
            features.append(x)
            block = i // 2
            wants_rgb = self.architecture == "skip" or block == self.n_blocks - 1
            if with_image and i % 2 == 0 and wants_rgb:
                rgb = getattr(self, f"output{block}")(x, wp[:, i + 1])
                image = rgb if image is None else rgb + self.upsample(image)
        return features, image

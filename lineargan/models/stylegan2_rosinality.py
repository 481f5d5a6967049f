"""StyleGAN2 in the rosinality/stylegan2-pytorch checkpoint layout (``model.py``'s Generator).

Researchers most often hold StyleGAN2 weights as rosinality ``.pt`` files: either a training
checkpoint from ``train.py`` (``{"g", "d", "g_ema", "g_optim", "d_optim", "args": Namespace,
"ada_aug_p"}``) or an NVIDIA model converted with ``convert_weight.py`` (``{"g_ema",
"latent_avg"}``). The modules below rebuild that generator with the *same state-dict keys*
(``style.N.*``, ``input.input``, ``conv1``, ``to_rgb1``, ``convs.N``, ``to_rgbs.N``,
``noises.noise_N`` and the blur-kernel buffers), so ``g_ema`` loads unchanged; the reference's
compiled CUDA ops are replaced by :mod:`lineargan.models.ops`. Only the generator is rebuilt
(no discriminator, so no down-sampling convolutions).

Architecture hyper-parameters are read from the state dict: ``n_mlp`` (``style.N`` layers),
``style_dim`` (their width), ``size`` (number of ``to_rgbs`` + 2 doublings of 4 px) and the
channel width of every resolution (conv weight shapes). rosinality's width table (512 up to
32 px, then ``channel_multiplier`` × 256/128/64/32/16 from 64 px) is the default when building
a model by hand; widths read from a checkpoint may also differ from the table (small models
trained with edited tables, and the tests' narrow models).

Feature maps follow the authors' StyleGAN2 port (AtlantixJJ/LinearGAN
``models/stylegan2_generator_network.py``, ``SynthesisModule.forward`` with
``architecture_type='skip'``): one map per synthesis convolution — the 4×4 conv, then both
convs of every resolution — ToRGB layers excluded, each taken at the *output of its layer*:
modulated conv → + noise → + bias → leaky ReLU(0.2) × √2. That is exactly the output of a
rosinality ``StyledConv`` (whose ``FusedLeakyReLU`` adds the bias), so 2·log2(size) − 3 maps,
named ``conv{k}_{r}x{r}`` (``conv0_4x4``, ``conv1_8x8``, ``conv2_8x8``, ...).

Latents: the authors sample StyleGAN2 in truncated w+ with ψ = 0.5 on all 18 layers
(``model_settings.STYLEGAN2_TRUNCATION_PSI`` / ``STYLEGAN2_TRUNCATION_LAYERS``, used by
``G.truncation(G.mapping(z))`` for ``trunc-wp``); those are the defaults here. The truncation
centre is the checkpoint's ``latent_avg`` when it has one (``convert_weight.py`` stores the
NVIDIA model's ``dlatent_avg``); a ``train.py`` checkpoint has none, so it is the mean of the
mapping network over 4,096 standard-normal z drawn from ``torch.Generator`` seeded with
:data:`W_AVG_SEED` (rosinality's own ``mean_latent(4096)``, made reproducible). Noise is the
checkpoint's fixed ``noises.noise_N`` buffers unless ``randomize_noise`` is set (the authors'
default is fixed noise too), so one latent always gives one image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lineargan.errors import CheckpointError
from lineargan.models.checkpoints import read_generator_checkpoint
from lineargan.models.ops import FusedLeakyReLU, fused_leaky_relu, upfirdn2d
from lineargan.models.protocols import GeneratorAdapter, GeneratorOutput, LatentWeights
from lineargan.models.registry import register_generator
from lineargan.models.style_latents import LatentSpace, StyleLatents
from lineargan.models.weights import load_into

BLUR_KERNEL = (1, 3, 3, 1)
W_AVG_SAMPLES = 4096
W_AVG_SEED = 0
# Where the state dict sits in rosinality checkpoints, in order of preference (None: bare).
CHECKPOINT_KEYS: tuple[str | None, ...] = ("g_ema", "g", None)


def rosinality_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """rosinality's width table, 4 px up to ``size``."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    return {
        res: width * (channel_multiplier if res >= 64 else 1)
        for res, width in table.items()
        if res <= size
    }


def make_kernel(taps: Sequence[float]) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D taps, normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


class PixelNorm(nn.Module):
    """Normalise each z to unit mean square, the mapping network's first step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class Upsample(nn.Module):
    """2× FIR up-sampling of the ToRGB skip image (kernel gain factor² keeps the mean)."""

    def __init__(self, taps: Sequence[float] = BLUR_KERNEL, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(taps) * factor**2)
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Blur(nn.Module):
    """FIR low-pass after a strided transposed conv (anti-aliasing of the up-sampling conv)."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(taps) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class EqualLinear(nn.Module):
    """Dense layer with equalised learning rate: weights stored unscaled, scaled at run time."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class ModulatedConv2d(nn.Module):
    """Style-modulated (and demodulated) conv, one weight per sample via a grouped conv."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
    ) -> None:
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            pad = ((p + 1) // 2 + factor - 1, p // 2 + 1)
            self.blur = Blur(blur_kernel, pad=pad, upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(
            torch.randn(1, out_channel, in_channel, kernel_size, kernel_size)
        )
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        k, cin, cout = self.kernel_size, self.in_channel, self.out_channel
        s = self.modulation(style).view(batch, 1, cin, 1, 1)
        weight = self.scale * self.weight * s  # (B, out, in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.square().sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(batch, cout, 1, 1, 1)
        x = x.reshape(1, batch * cin, height, width)
        if self.upsample:
            # transposed conv wants (in, out/groups, k, k) per group
            weight = weight.transpose(1, 2).reshape(batch * cin, cout, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = self.blur(out.view(batch, cout, *out.shape[-2:]))
        else:
            weight = weight.reshape(batch * cout, cin, k, k)
            out = F.conv2d(x, weight, padding=self.padding, groups=batch)
            out = out.view(batch, cout, *out.shape[-2:])
        return out


class NoiseInjection(nn.Module):
    """Adds per-pixel noise scaled by one learned strength."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, *x.shape[2:]).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4×4 constant the synthesis network starts from."""

    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated conv → noise → bias + leaky ReLU × √2: one synthesis layer (a feature map)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel,
            out_channel,
            kernel_size,
            style_dim,
            upsample=upsample,
            blur_kernel=blur_kernel,
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    """1×1 modulated conv to RGB (no demodulation), added to the up-sampled skip image."""

    def __init__(
        self,
        in_channel: int,
        style_dim: int,
        upsample: bool = True,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class Generator(nn.Module):
    """rosinality's StyleGAN2 ``Generator`` (same submodule names, so the same state dict).

    ``channels`` overrides the width table (resolution → channels, 4 px up to ``size``);
    ``None`` uses rosinality's table for ``channel_multiplier``.
    """

    def __init__(
        self,
        size: int,
        style_dim: int,
        n_mlp: int,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
        lr_mlp: float = 0.01,
        channels: Mapping[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.log_size = int(math.log2(size))
        if size < 8 or 2**self.log_size != size:
            raise ValueError(f"StyleGAN2 size must be a power of two >= 8, got {size}")
        self.size = size
        self.style_dim = style_dim
        self.channels = dict(channels or rosinality_channels(size, channel_multiplier))
        ch = self.channels
        self.style = nn.Sequential(
            PixelNorm(),
            *(
                EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True)
                for _ in range(n_mlp)
            ),
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
        self.num_layers = (self.log_size - 2) * 2 + 1  # synthesis convs = noise inputs
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty in the reference too; kept for parity
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, res, res))
        in_channel = ch[4]
        for i in range(3, self.log_size + 1):
            out_channel = ch[2**i]
            self.convs.append(
                StyledConv(
                    in_channel, out_channel, 3, style_dim, upsample=True, blur_kernel=blur_kernel
                )
            )
            self.convs.append(
                StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel)
            )
            self.to_rgbs.append(ToRGB(out_channel, style_dim))
            in_channel = out_channel
        self.n_latent = self.log_size * 2 - 2  # w+ entries: convs and ToRGBs share them

    def layer_resolutions(self) -> list[int]:
        """Output size of each synthesis conv, in order (4, 8, 8, 16, 16, ...)."""
        return [2 ** ((i + 5) // 2) for i in range(self.num_layers)]

    def synthesis(
        self,
        wp: torch.Tensor,
        randomize_noise: bool = False,
        last_layer: int | None = None,
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """w+ (B, n_latent, style_dim) → (image, feature of every synthesis conv).

        With ``last_layer`` set, stops after that conv's feature and skips every ToRGB,
        returning no image: fitting from regenerated features needs only the maps.
        """
        if randomize_noise:
            noises: list[torch.Tensor | None] = [None] * self.num_layers
        else:
            noises = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        want_image = last_layer is None
        x = self.conv1(self.input(wp.shape[0]), wp[:, 0], noise=noises[0])
        feats = [x]
        skip = self.to_rgb1(x, wp[:, 1]) if want_image else None
        for i, to_rgb in enumerate(self.to_rgbs):
            for k in (2 * i, 2 * i + 1):
                if last_layer is not None and len(feats) > last_layer:
                    return None, feats
                x = self.convs[k](x, wp[:, k + 1], noise=noises[k + 1])
                feats.append(x)
            if want_image:
                skip = to_rgb(x, wp[:, 2 * i + 3], skip)
        return skip, feats


class StyleGAN2Rosinality(GeneratorAdapter):
    """A rosinality StyleGAN2 behind the adapter contract, in one latent space."""

    def __init__(
        self,
        generator: Generator,
        style: StyleLatents,
        w_avg: torch.Tensor,
        randomize_noise: bool = False,
    ) -> None:
        super().__init__()
        self.g = generator
        self.style_latents = style
        self.randomize_noise = randomize_noise
        self.register_buffer("w_avg", w_avg.reshape(-1).float(), persistent=False)
        self.latent_dim, self.latent_vectors = style.dim, style.vectors
        self.latent_space = style.space
        self.resolution = generator.size
        self.layer_names = tuple(
            f"conv{i}_{r}x{r}" for i, r in enumerate(generator.layer_resolutions())
        )

    def _mapping(self, z: torch.Tensor) -> torch.Tensor:
        return self.g.style(z)

    def iter_latents(self, n: int, seed: int, chunk_size: int) -> Iterator[torch.Tensor]:
        """Seeded z drawn exactly as the base class does, mapped into this latent space.

        Yields CPU tensors (the cache stores them as NumPy) whatever device the model is on.
        """
        gen = torch.Generator().manual_seed(seed)
        device = self.w_avg.device
        for start in range(0, n, chunk_size):
            z = torch.randn(min(chunk_size, n - start), self.style_latents.z_dim, generator=gen)
            with torch.no_grad():
                z = z.to(device=device, dtype=self.w_avg.dtype)
                yield self.style_latents.sample(z, self._mapping, self.w_avg).float().cpu()

    def _wp(self, latents: torch.Tensor) -> torch.Tensor:
        return self.style_latents.to_wp(latents, self._mapping)

    def forward(self, latents: torch.Tensor) -> GeneratorOutput:
        image, features = self.g.synthesis(self._wp(latents), self.randomize_noise)
        assert image is not None
        # unclamped, as the reference returns it: consumers clamp (protocols.clamp_image)
        return GeneratorOutput(image=image, features=features)

    def forward_features(
        self, latents: torch.Tensor, layers: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Only the maps of ``layers``: the forward stops after the last one, no ToRGB runs."""
        if layers is None:
            return self.forward(latents).features
        layers = list(layers)
        if not layers:
            return []
        _, features = self.g.synthesis(self._wp(latents), self.randomize_noise, max(layers))
        return [features[i] for i in layers]

    def latent_weights(self, module: str | None = None) -> LatentWeights:
        """The modulation reading each w+ entry: ``conv1`` (entry 0), ``convs[i - 1]`` (entries
        shared with a ToRGB take the conv's, as SeFa does), the last ToRGB for the last entry."""
        mods = [self.g.conv1.conv, *(c.conv for c in self.g.convs), self.g.to_rgbs[-1].conv]
        weights = [m.modulation.weight.detach() * m.modulation.scale for m in mods]
        return LatentWeights(tuple(weights), per_layer=True)


def _need(state: Mapping[str, torch.Tensor], key: str, source: str | Path) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(
            f"checkpoint {source} has no {key!r}, which a rosinality StyleGAN2 generator has",
            "pass a rosinality/stylegan2-pytorch generator state dict (g_ema) or choose the "
            "generator name matching the checkpoint's layout",
        )
    return state[key]


def infer_architecture(state: Mapping[str, torch.Tensor], source: str | Path) -> dict[str, Any]:
    """``Generator`` keyword arguments read from a rosinality state dict's keys and shapes."""
    style_dim = int(_need(state, "style.1.weight", source).shape[1])
    n_mlp = 1
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    channels = {4: int(_need(state, "input.input", source).shape[1])}
    n_blocks = 0
    while f"to_rgbs.{n_blocks}.conv.weight" in state:
        n_blocks += 1
    if n_blocks == 0:
        _need(state, "to_rgbs.0.conv.weight", source)  # raises: a size-4 model has no blocks
    for i in range(n_blocks):
        weight = _need(state, f"convs.{2 * i}.conv.weight", source)
        channels[2 ** (i + 3)] = int(weight.shape[1])
    size = 2 ** (n_blocks + 2)
    return {"size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channels": channels}


def channel_multiplier_of(channels: Mapping[int, int]) -> int | None:
    """The rosinality ``channel_multiplier`` a width table matches, or None if none does.

    Below 64 px every multiplier gives the same table; the smallest (1) is returned then.
    """
    size = max(channels)
    for mult in (1, 2, 4, 8):
        if rosinality_channels(size, mult) == dict(channels):
            return mult
    return None


def _latent_avg(obj: Any, w_dim: int, source: str | Path) -> torch.Tensor | None:
    """The checkpoint's ``latent_avg`` as a (w_dim,) vector, or None when it has none."""
    avg = obj.get("latent_avg") if isinstance(obj, Mapping) else None
    if avg is None:
        return None
    if not isinstance(avg, torch.Tensor) or avg.numel() != w_dim:
        shape = tuple(avg.shape) if isinstance(avg, torch.Tensor) else type(avg).__name__
        raise CheckpointError(
            f"checkpoint {source} has a latent_avg of shape {shape}, expected ({w_dim},)",
            "remove latent_avg from the checkpoint to use the mapping network's mean instead",
        )
    return avg.detach().reshape(w_dim).float()


@torch.no_grad()
def mean_w(generator: Generator, n: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED) -> torch.Tensor:
    """Mean of the mapping network over ``n`` seeded z: the truncation centre when the
    checkpoint stores none (reproducible, unlike the reference's unseeded mean_latent)."""
    z = torch.randn(n, generator.style_dim, generator=torch.Generator().manual_seed(seed))
    device = generator.input.input.device
    return generator.style(z.to(device)).mean(0).float()


@register_generator("stylegan2-rosinality")
def stylegan2_rosinality(
    checkpoint: str | Path | None = None,
    checkpoint_key: str | None = None,
    latent_space: LatentSpace = "trunc-wp",
    truncation: float = 0.5,
    truncation_layers: int = 18,
    randomize_noise: bool = False,
) -> StyleGAN2Rosinality:
    """A rosinality StyleGAN2 from ``checkpoint`` (train.py or convert_weight.py ``.pt``).

    ``checkpoint_key`` picks the entry holding the generator (default: ``g_ema``, then ``g``,
    then the file as a bare state dict); ``latent_space`` is one of z / w / wp / trunc-wp;
    ``truncation`` (ψ) and ``truncation_layers`` apply to trunc-wp (authors' StyleGAN2
    defaults: 0.5 on 18 layers, i.e. all of them); ``randomize_noise`` draws fresh noise per
    call instead of the checkpoint's fixed buffers (images then differ run to run).
    """
    ckpt = read_generator_checkpoint(
        checkpoint,
        generator="stylegan2-rosinality",
        what="a rosinality/stylegan2-pytorch .pt file (train.py checkpoint or convert_weight.py "
        "output)",
        keys=CHECKPOINT_KEYS,
        checkpoint_key=checkpoint_key,
    )
    generator = Generator(**infer_architecture(ckpt.state, ckpt.path))
    load_into(generator, ckpt.state, ckpt.source)
    generator.eval()
    style = StyleLatents(
        latent_space,
        z_dim=generator.style_dim,
        w_dim=generator.style_dim,
        num_layers=generator.n_latent,
        truncation=truncation,
        truncation_layers=truncation_layers,
    )
    w_avg = _latent_avg(ckpt.contents, generator.style_dim, ckpt.path)
    if w_avg is None:
        w_avg = mean_w(generator)
    model = StyleGAN2Rosinality(generator, style, w_avg, randomize_noise=randomize_noise)
    model.name = "stylegan2-rosinality"
    model.weights_sha256 = ckpt.weights_id
    return model

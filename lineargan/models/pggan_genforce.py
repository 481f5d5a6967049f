"""PGGAN (Karras et al. 2018) from a genforce/genforce checkpoint.

genforce trains and converts PGGANs as ``models/pggan_generator.py``; its checkpoints hold
``{"generator": sd, "generator_smooth": sd, ...}`` and the EMA weights (``generator_smooth``)
are the ones to sample from. Every conv block is pixel-norm → (nearest upsample) → conv with
equalised learning rate (weights scaled by ``gain / sqrt(fan_in)`` at run time) → leaky ReLU;
a 1×1 "ToRGB" block per resolution turns features into an image, and only the last one is used
once training has finished (``lod`` = 0).

The feature map of a resolution block is what the authors' port
(AtlantixJJ/LinearGAN ``models/pggan_generator_network.py``) collects with
``generate_feature=True``: the output of the block's second conv, after its leaky ReLU (the
pixel norm that follows belongs to the next block). One map per block, so a 256-px PGGAN has 7.

The network is written once for both checkpoint layouts: a block class only decides how its
weights are named and stored (:class:`GenforceConvBlock` here, the authors' in
:mod:`lineargan.models.pggan_lineargan`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.checkpoints import GENFORCE_KEYS, read_generator_checkpoint
from lineargan.models.protocols import GeneratorAdapter, GeneratorOutput, LatentWeights
from lineargan.models.registry import register_generator
from lineargan.models.weights import load_into

INIT_RES = 4
# What the PGGAN and StyleGAN adapters ask for when no checkpoint is given.
WEIGHTS_FILE = "the .pt/.pth weights file"


# --- operations shared by the PGGAN and StyleGAN adapters (both layouts) -------------------


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each pixel's feature vector scaled to unit mean square (over dim 1)."""
    return x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def fused_upconv(
    x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Nearest 2× upsampling and a 3×3 conv as one stride-2 transposed conv.

    ``kernel`` is (in, out, 3, 3), already scaled. Summing its four one-pixel shifts gives the
    4×4 kernel of "upsample then convolve", which is how both genforce and the official
    TensorFlow code implement ``fused_scale``.
    """
    k = F.pad(kernel, (1, 1, 1, 1))
    k = k[:, :, 1:, 1:] + k[:, :, :-1, 1:] + k[:, :, 1:, :-1] + k[:, :, :-1, :-1]
    return F.conv_transpose2d(x, k, bias, stride=2, padding=1)


def block_names(num_blocks: int) -> tuple[str, ...]:
    """``block0_4x4``, ``block1_8x8``, ...: one feature map per resolution block."""
    return tuple(f"block{i}_{INIT_RES << i}x{INIT_RES << i}" for i in range(num_blocks))


def tensor_shape(state: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Size:
    """Shape of ``state[key]``, or a one-line error naming the key the architecture needs."""
    if key not in state:
        raise CheckpointError(
            f"checkpoint {source} has no {key!r}, which this architecture needs",
            "pass a checkpoint of this architecture or choose the matching generator name",
        )
    return state[key].shape


def count_indexed(state: Mapping[str, torch.Tensor], template: str) -> int:
    """How many consecutive ``template.format(i)`` keys (i = 0, 1, ...) the state holds."""
    n = 0
    while template.format(n) in state:
        n += 1
    return n


def check_lod(state: Mapping[str, torch.Tensor], key: str, source: str) -> None:
    """Refuse a snapshot taken mid-progressive-growing (``lod`` > 0): its output is a blend
    of two resolutions, which these adapters do not reproduce."""
    if key in state and float(state[key].reshape(-1)[0]) != 0.0:
        raise CheckpointError(
            f"checkpoint {source} was saved while growing ({key} = {float(state[key]):g})",
            "pass the final snapshot of the training run (lod 0)",
        )


# --- the network ---------------------------------------------------------------------------


class PGConvBlock(nn.Module):
    """pixel-norm → (upsample) → conv (equalised lr) → leaky ReLU; subclasses store weights.

    ``fused`` selects the transposed-conv form of "upsample + conv" (``fused_scale``).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 3,
        padding: int = 1,
        upsample: bool = False,
        fused: bool = False,
        gain: float = math.sqrt(2.0),
        linear: bool = False,
    ) -> None:
        super().__init__()
        self.upsample, self.fused = upsample, upsample and fused
        self.padding, self.linear = padding, linear
        self.scale = gain / math.sqrt(cin * kernel * kernel)

    def kernel(self) -> torch.Tensor:
        """Scaled kernel: (out, in, k, k), or (in, out, k, k) when fused."""
        raise NotImplementedError

    def bias_vector(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(x)
        if self.fused:
            x = fused_upconv(x, self.kernel(), self.bias_vector())
        else:
            if self.upsample:
                x = upsample2x(x)
            x = F.conv2d(x, self.kernel(), self.bias_vector(), padding=self.padding)
        return x if self.linear else F.leaky_relu(x, 0.2)


class GenforceConvBlock(PGConvBlock):
    """genforce ``ConvBlock`` weights: ``weight`` ((in, out, k, k) when fused) and ``bias``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, **kw) -> None:
        super().__init__(cin, cout, kernel, **kw)
        shape = (cin, cout) if self.fused else (cout, cin)
        self.weight = nn.Parameter(torch.randn(*shape, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))

    def kernel(self) -> torch.Tensor:
        return self.weight * self.scale

    def bias_vector(self) -> torch.Tensor:
        return self.bias


BlockFactory = Callable[..., PGConvBlock]


class BlockGenerator(GeneratorAdapter):
    """A generator with one feature map per resolution block (PGGAN, StyleGAN): the image is
    the last block's ToRGB, and a features-only pass runs no block past the last needed one.
    Subclasses give ``_blocks(latents, n)`` (the first n maps) and ``_to_rgb(block)``."""

    num_blocks: int
    final_tanh: bool

    def _blocks(self, latents: torch.Tensor, num_blocks: int) -> list[torch.Tensor]:
        raise NotImplementedError

    def _to_rgb(self, block: int) -> nn.Module:
        raise NotImplementedError

    def forward(self, latents: torch.Tensor) -> GeneratorOutput:
        features = self._blocks(latents, self.num_blocks)
        image = self._to_rgb(self.num_blocks - 1)(features[-1])
        return GeneratorOutput(image=finish_image(image, self.final_tanh), features=features)

    def forward_features(
        self, latents: torch.Tensor, layers: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        if layers is None:
            return self._blocks(latents, self.num_blocks)
        features = self._blocks(latents, max(layers) + 1 if layers else 0)
        return [features[i] for i in layers]


class PGGANGenerator(BlockGenerator):
    """A trained PGGAN (``lod`` 0) returning one feature map per resolution block.

    Modules are named as in the checkpoints (``layer{2i}``, ``layer{2i+1}``, ``output{i}``,
    buffer ``lod``) so their state dicts load unchanged. ``channels[i]`` is the width of block
    i (4·2^i px). ``pre_normalize``: genforce pixel-normalises z once more before ``layer0``
    (which normalises again); the authors' port does not.
    """

    latent_space = "z"

    def __init__(
        self,
        channels: Sequence[int],
        z_dim: int = 512,
        image_channels: int = 3,
        fused_scale: bool = False,
        final_tanh: bool = False,
        make_block: BlockFactory = GenforceConvBlock,
        pre_normalize: bool = True,
    ) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.latent_dim, self.image_channels = z_dim, image_channels
        self.num_blocks = len(self.channels)
        self.resolution = INIT_RES << (self.num_blocks - 1)
        self.layer_names = block_names(self.num_blocks)
        self.final_tanh, self.pre_normalize = final_tanh, pre_normalize
        self.register_buffer("lod", torch.zeros(()))
        for i, width in enumerate(self.channels):
            if i == 0:  # the "dense" layer: a 4×4 conv of the 1×1 latent, padded to 4×4
                first = make_block(z_dim, width, kernel=INIT_RES, padding=INIT_RES - 1)
            else:
                first = make_block(self.channels[i - 1], width, upsample=True, fused=fused_scale)
            self.add_module(f"layer{2 * i}", first)
            self.add_module(f"layer{2 * i + 1}", make_block(width, width))
            to_rgb = make_block(width, image_channels, kernel=1, padding=0, gain=1.0, linear=True)
            self.add_module(f"output{i}", to_rgb)

    def _blocks(self, z: torch.Tensor, num_blocks: int) -> list[torch.Tensor]:
        """Feature maps of the first ``num_blocks`` blocks (the rest is never run)."""
        x = pixel_norm(z) if self.pre_normalize else z
        x = x.reshape(len(z), self.latent_dim, 1, 1)
        features = []
        for i in range(num_blocks):
            x = getattr(self, f"layer{2 * i}")(x)
            x = getattr(self, f"layer{2 * i + 1}")(x)
            features.append(x)
        return features

    def _to_rgb(self, block: int) -> nn.Module:
        return getattr(self, f"output{block}")

    def latent_weights(self, module: str | None = None) -> LatentWeights:
        """``layer0``'s scaled 4×4 kernel: the "dense" map of the (pixel-normalised) z to the
        4×4 block, SeFa's first PGGAN layer."""
        return LatentWeights((self.layer0.kernel().detach().permute(0, 2, 3, 1).flatten(0, 2),))


def finish_image(image: torch.Tensor, final_tanh: bool) -> torch.Tensor:
    """Optional tanh, and grey (1-channel) generators repeated to RGB for the segmenters.

    No clamp: like the references, pixels may leave [-1, 1] slightly, and clamping would cut
    the gradients SCS and SIE need; consumers clamp (``protocols.clamp_image``).
    """
    if final_tanh:
        image = torch.tanh(image)
    return image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image


def genforce_fused_scale(
    state: Mapping[str, torch.Tensor], channels: Sequence[int], source: str, given: bool | None
) -> bool:
    """Whether a genforce PGGAN's up-convs are fused, read off its weights.

    genforce keeps a fused up-conv's kernel under the same key as a plain one, only
    transposed: (in, out, 3, 3) instead of (out, in, 3, 3). An up-conv whose widths differ
    therefore tells which it is; one whose widths are equal (every up-conv of a ≤ 32-px model
    with genforce's default widths) looks the same either way, and loading it the wrong way
    gives wrong images without any error. So: the weights decide where they can (``given``
    must then agree), ``given`` decides where they cannot, and without either the load is
    refused.
    """
    if len(channels) < 2:
        return bool(given)  # a 4-px model has no up-conv
    found: dict[bool, str] = {}
    for i in range(1, len(channels)):
        cin, cout = channels[i - 1], channels[i]
        key = f"layer{2 * i}.weight"
        shape = tuple(tensor_shape(state, key, source)[:2])
        if cin != cout and shape in ((cout, cin), (cin, cout)):
            found.setdefault(shape == (cin, cout), key)
    if len(found) > 1:
        raise CheckpointError(
            f"checkpoint {source} mixes plain ({found[False]}) and fused ({found[True]}) "
            "up-conv kernels",
            "pass a checkpoint saved by genforce's PGGANGenerator",
        )
    if found:
        ((fused, key),) = found.items()
        if given is not None and given != fused:
            raise CheckpointError(
                f"checkpoint {source} has {'fused' if fused else 'plain'} up-convs ({key} is "
                f"{tuple(state[key].shape)}), but fused_scale={given} was given",
                "drop fused_scale: it is read from the weights",
            )
        return fused
    if given is None:
        raise CheckpointError(
            f"checkpoint {source}: whether its up-convs are fused cannot be read from its "
            f"weights (every up-conv keeps its width, {channels[1]}→{channels[1]}, and is stored "
            "the same way fused or not)",
            "pass fused_scale=true (transposed-conv up-convs) or fused_scale=false (nearest "
            "upsample + conv), as the model was trained",
        )
    return given


def build_pggan(
    state: dict[str, torch.Tensor],
    source: str,
    *,
    weight_key: str,
    fused_scale: bool | Callable[[Sequence[int]], bool],
    final_tanh: bool,
    make_block: BlockFactory,
    pre_normalize: bool,
) -> PGGANGenerator:
    """A PGGAN shaped after ``state`` (depth, widths, z size, image channels), weights loaded.

    ``weight_key`` names a conv block's weight inside the block ("weight" or "conv.weight");
    ``fused_scale`` is a flag, or a function of the block widths that decides it.
    """
    num_blocks = count_indexed(state, f"output{{}}.{weight_key}")
    if num_blocks == 0:
        raise CheckpointError(
            f"checkpoint {source} is not a PGGAN generator of this layout "
            f"(no 'output0.{weight_key}')",
            "pass a PGGAN generator checkpoint or choose the matching generator name",
        )
    channels = [
        tensor_shape(state, f"layer{2 * i + 1}.{weight_key}", source)[0] for i in range(num_blocks)
    ]
    z_dim = tensor_shape(state, f"layer0.{weight_key}", source)[1]
    image_channels = tensor_shape(state, f"output0.{weight_key}", source)[0]
    check_lod(state, "lod", source)
    model = PGGANGenerator(
        channels,
        z_dim=z_dim,
        image_channels=image_channels,
        fused_scale=fused_scale(channels) if callable(fused_scale) else fused_scale,
        final_tanh=final_tanh,
        make_block=make_block,
        pre_normalize=pre_normalize,
    )
    load_into(model, state, source)
    return model


@register_generator("pggan-genforce")
def pggan_genforce(
    checkpoint: str | Path | None = None,
    checkpoint_key: str | None = None,
    fused_scale: bool | None = None,
    final_tanh: bool = False,
) -> PGGANGenerator:
    """PGGAN from a genforce checkpoint (``generator_smooth`` first, then ``generator``, or a
    bare state dict). Depth, widths and z size come from the weights, and so does
    ``fused_scale`` wherever an up-conv changes width (:func:`genforce_fused_scale`; give it
    for a model whose up-convs all keep their width); ``final_tanh`` is not stored in them."""
    if fused_scale is not None and not isinstance(fused_scale, bool):
        raise LinearGanError(
            f"fused_scale {fused_scale!r} is not true or false",
            "pass fused_scale=true or false, or leave it out to read it from the weights",
        )
    ckpt = read_generator_checkpoint(
        checkpoint,
        generator="pggan-genforce",
        what=WEIGHTS_FILE,
        keys=GENFORCE_KEYS,
        checkpoint_key=checkpoint_key,
    )
    model = build_pggan(
        ckpt.state,
        ckpt.source,
        weight_key="weight",
        fused_scale=lambda widths: genforce_fused_scale(
            ckpt.state, widths, ckpt.source, fused_scale
        ),
        final_tanh=bool(final_tanh),
        make_block=GenforceConvBlock,
        pre_normalize=True,
    )
    model.name, model.weights_sha256 = "pggan-genforce", ckpt.weights_id
    return model

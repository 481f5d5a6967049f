"""StyleGAN2 from genforce/genforce checkpoints, and the adapter both StyleGAN2 layouts share.

genforce saves ``{"generator": sd, "generator_smooth": sd, "discriminator": sd, ...}`` (model
zoo files), or the same under ``"models"`` (its runner's training checkpoints); the EMA weights
``generator_smooth`` are preferred, as genforce's own ``synthesize.py`` does. The architecture
(resolution, z/w dims, mapping depth and width, per-block channel widths — hence ``fmaps_base``
/ ``fmaps_max`` — and ``skip`` vs ``origin``) is read from the state-dict shapes, so no option
is needed for it. Not supported, and refused with a message: label-conditional generators
(``mapping.label_weight``), ``repeat_w=False``, non-constant input, and ``resnet`` (genforce's
own resnet synthesis registers its skip convs under the conv layers' names and cannot load).

Feature maps, in the paper's layer order: the output of every synthesis conv layer
``layer0 … layer{2·log2(res/4)}`` (17 at 1024 px, 13 at 256 px), ToRGB excluded — the tensor
after noise, bias and ``leaky_relu * sqrt(2)``, exactly what the authors' port appends to its
``feats`` list (AtlantixJJ/LinearGAN ``stylegan2_generator_network.py``, ``skip``/``origin``).
Latents: ``trunc-wp`` by default with the authors' StyleGAN2 settings (psi 0.5 on the first 18
layers, i.e. every layer up to 1024 px; ``model_settings.STYLEGAN2_TRUNCATION_*``), and fixed
noise buffers (``randomize_noise=False``) so one latent always gives one image.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.checkpoints import (
    BAKED_TRUNCATION_KEY,
    GENFORCE_KEYS,
    PORT_KEYS,
    read_generator_checkpoint,
)
from lineargan.models.protocols import GeneratorAdapter, GeneratorOutput, LatentWeights
from lineargan.models.registry import register_generator
from lineargan.models.style_latents import StyleLatents
from lineargan.models.stylegan2_blocks import (
    Architecture,
    Layout,
    MappingNetwork,
    Synthesis,
    WAverage,
    block_resolution,
    layer_resolution,
)
from lineargan.models.weights import load_into

# The authors' StyleGAN2 defaults (LinearGAN models/model_settings.py).
AUTHORS_TRUNCATION = 0.5
AUTHORS_TRUNCATION_LAYERS = 18

GENERATOR_NAMES: dict[Layout, str] = {
    "genforce": "stylegan2-genforce",
    "lineargan": "stylegan2-lineargan",
}
# What both StyleGAN2 layouts ask for when no checkpoint is given.
WEIGHTS_FILE = "the generator's .pth file"


@dataclass(frozen=True)
class StyleGAN2Arch:
    """Everything that fixes the parameter shapes of one StyleGAN2 generator."""

    z_dim: int
    w_dim: int
    mapping_layers: int
    mapping_hidden: int
    channels: tuple[int, ...]  # per synthesis block, 4×4 first
    architecture: Architecture = "skip"
    image_channels: int = 3

    @property
    def resolution(self) -> int:
        return block_resolution(len(self.channels) - 1)


def _dense_key(layout: Layout, prefix: str) -> str:
    return f"{prefix}.fc.weight" if layout == "lineargan" else f"{prefix}.weight"


def _out_channels(layout: Layout, weight: torch.Tensor) -> int:
    """Output channels of a conv weight: (out, in, k, k) or TF order (k, k, in, out)."""
    return int(weight.shape[3] if layout == "lineargan" else weight.shape[0])


def _layout_hint(state: Mapping[str, Any], layout: Layout) -> str:
    """Which generator name fits a state dict that does not fit ``layout``."""
    if layout == "genforce" and "mapping.dense0.fc.weight" in state:
        return "it is in the authors' layout: use generator stylegan2-lineargan"
    if layout == "lineargan" and "mapping.dense0.weight" in state:
        return "it is in genforce's layout: use generator stylegan2-genforce"
    if "style.1.weight" in state or "conv1.conv.weight" in state:
        return "it is in rosinality's layout: use generator stylegan2-rosinality"
    return f"pass a StyleGAN2 generator checkpoint in the {layout} layout"


def infer_arch(state: Mapping[str, torch.Tensor], layout: Layout, source: str) -> StyleGAN2Arch:
    """Read the architecture off the state dict's key names and shapes."""

    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise CheckpointError(
                f"checkpoint {source} has no {key!r}, so it is not a StyleGAN2 generator in the "
                f"{layout} layout",
                _layout_hint(state, layout),
            )
        return state[key]

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(
            f"checkpoint {source} is a {what} StyleGAN2, which is not supported",
            "pass an unconditional skip/origin StyleGAN2 (config F) generator",
        )

    if "mapping.label_weight" in state:
        raise refuse("label-conditional")
    if any(k.startswith("synthesis.skip_layer") for k in state):
        raise refuse("resnet-architecture")
    if "synthesis.early_layer.weight" in state:
        raise refuse("non-constant-input")
    dense0 = need(_dense_key(layout, "mapping.dense0"))
    n_mapping = 0
    while _dense_key(layout, f"mapping.dense{n_mapping}") in state:
        n_mapping += 1
    w_dim = int(need(_dense_key(layout, "synthesis.layer0.style")).shape[1])
    last = state[_dense_key(layout, f"mapping.dense{n_mapping - 1}")]
    if int(last.shape[0]) != w_dim:
        raise refuse("repeat_w=False")
    n_conv = 0
    while f"synthesis.layer{n_conv}.weight" in state:
        n_conv += 1
    if n_conv < 3 or n_conv % 2 == 0:
        raise CheckpointError(
            f"checkpoint {source} has {n_conv} synthesis conv layers; a StyleGAN2 of 8 px or "
            "more has an odd number of at least 3",
            _layout_hint(state, layout),
        )
    n_blocks = (n_conv + 1) // 2
    channels = [int(need("synthesis.early_layer.const").shape[1])]
    channels += [
        _out_channels(layout, state[f"synthesis.layer{2 * b}.weight"]) for b in range(1, n_blocks)
    ]
    last_rgb = need(f"synthesis.output{n_blocks - 1}.weight")
    image_channels = _out_channels(layout, last_rgb)
    if image_channels != 3:
        raise CheckpointError(
            f"checkpoint {source} makes {image_channels}-channel images",
            "pass an RGB generator (the segmenters read 3-channel images)",
        )
    return StyleGAN2Arch(
        z_dim=int(dense0.shape[1]),
        w_dim=w_dim,
        mapping_layers=n_mapping,
        mapping_hidden=int(dense0.shape[0]) if n_mapping > 1 else w_dim,
        channels=tuple(channels),
        architecture="skip" if "synthesis.output0.weight" in state else "origin",
        image_channels=image_channels,
    )


class StyleGAN2Generator(GeneratorAdapter):
    """A StyleGAN2 whose own state dict has the reference layout's keys.

    ``mapping``, ``truncation`` (holding ``w_avg``) and ``synthesis`` are attributes of the
    adapter itself, so ``state_dict()`` is exactly the checkpoint's generator state dict.
    """

    def __init__(
        self,
        arch: StyleGAN2Arch,
        layout: Layout = "genforce",
        *,
        latent_space: str = "trunc-wp",
        truncation: float = AUTHORS_TRUNCATION,
        truncation_layers: int = AUTHORS_TRUNCATION_LAYERS,
        randomize_noise: bool = False,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.layout = layout
        self.mapping = MappingNetwork(
            arch.z_dim, arch.w_dim, arch.mapping_hidden, arch.mapping_layers, layout
        )
        self.truncation = WAverage(arch.w_dim)
        self.synthesis = Synthesis(
            list(arch.channels), arch.w_dim, layout, arch.architecture, arch.image_channels
        )
        self.latents = StyleLatents(
            latent_space,  # type: ignore[arg-type] - validated by StyleLatents
            arch.z_dim,
            arch.w_dim,
            self.synthesis.num_layers,
            truncation,
            truncation_layers,
        )
        self.randomize_noise = randomize_noise
        self.latent_space = latent_space
        self.latent_dim, self.latent_vectors = self.latents.dim, self.latents.vectors
        self.resolution = arch.resolution
        self.layer_names = tuple(
            f"layer{i}_{layer_resolution(i)}x{layer_resolution(i)}"
            for i in range(self.synthesis.n_conv)
        )

    def iter_latents(self, n: int, seed: int, chunk_size: int) -> Iterator[torch.Tensor]:
        """Seeded standard-normal z, drawn as the base class does, mapped to the latent space."""
        gen = torch.Generator().manual_seed(seed)
        device = self.truncation.w_avg.device
        for start in range(0, n, chunk_size):
            z = torch.randn(min(chunk_size, n - start), self.latents.z_dim, generator=gen)
            with torch.no_grad():
                yield self.latents.sample(z.to(device), self.mapping, self.truncation.w_avg).cpu()

    def _wp(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise LinearGanError(
                f"latents of shape {tuple(latents.shape)} do not fit {self.name or 'StyleGAN2'} "
                f"in latent space {self.latent_space!r}",
                f"pass (batch, {self.latent_dim}) latents, e.g. from sample_latents",
            )
        return self.latents.to_wp(latents, self.mapping)

    def forward(self, latents: torch.Tensor) -> GeneratorOutput:
        features, image = self.synthesis(self._wp(latents), self.randomize_noise)
        assert image is not None
        return GeneratorOutput(image=image, features=features)

    def forward_features(
        self, latents: torch.Tensor, layers: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Stops after the last requested conv layer and never runs the ToRGB path."""
        wanted = list(range(self.synthesis.n_conv))
        if layers is not None:
            wanted = [wanted[i] for i in layers]  # IndexError for a layer that does not exist
        if not wanted:
            return []
        features, _ = self.synthesis(
            self._wp(latents), self.randomize_noise, last_layer=max(wanted), with_image=False
        )
        return [features[i] for i in wanted]

    def latent_weights(self, module: str | None = None) -> LatentWeights:
        """The style affine reading each w+ entry: ``layer{i}``'s for every conv layer and,
        for the last entry (read by the last ToRGB only), ``output{i // 2}``'s, as SeFa's
        ``factorize_weight`` takes them."""
        weights = []
        for i in range(self.synthesis.num_layers):
            name = f"layer{i}" if i < self.synthesis.n_conv else f"output{i // 2}"
            dense = getattr(self.synthesis, name).style
            weights.append(dense.matrix().detach() * dense.scale)
        return LatentWeights(tuple(weights), per_layer=True)


def build_from_state(
    state: dict[str, torch.Tensor],
    layout: Layout,
    source: str,
    **latent_options: Any,
) -> StyleGAN2Generator:
    """Infer the architecture from ``state``, build the generator and load it strictly."""
    model = StyleGAN2Generator(infer_arch(state, layout, source), layout, **latent_options)
    load_into(model, state, source)
    return model


def load_stylegan2(
    layout: Layout,
    checkpoint: str | Path | None,
    checkpoint_key: str | None,
    **latent_options: Any,
) -> StyleGAN2Generator:
    """The generator in a StyleGAN2 checkpoint of ``layout``: both layouts' factories. The
    authors' files are bare state dicts that may still hold their baked-truncation buffer
    (ignored: the truncation options say it); genforce's put the EMA weights first."""
    name = GENERATOR_NAMES[layout]
    ckpt = read_generator_checkpoint(
        checkpoint,
        generator=name,
        what=WEIGHTS_FILE,
        keys=GENFORCE_KEYS if layout == "genforce" else PORT_KEYS,
        checkpoint_key=checkpoint_key,
    )
    state = ckpt.state
    if layout == "lineargan":
        state = {k: v for k, v in state.items() if k != BAKED_TRUNCATION_KEY}
    model = build_from_state(state, layout, ckpt.source, **latent_options)
    model.name, model.weights_sha256 = name, ckpt.weights_id
    return model


@register_generator("stylegan2-genforce")
def stylegan2_genforce(
    checkpoint: str | Path | None = None,
    checkpoint_key: str | None = None,
    latent_space: str = "trunc-wp",
    truncation: float = AUTHORS_TRUNCATION,
    truncation_layers: int = AUTHORS_TRUNCATION_LAYERS,
    randomize_noise: bool = False,
) -> StyleGAN2Generator:
    """StyleGAN2 from a genforce checkpoint (``generator_smooth`` before ``generator``)."""
    return load_stylegan2(
        "genforce",
        checkpoint,
        checkpoint_key,
        latent_space=latent_space,
        truncation=truncation,
        truncation_layers=truncation_layers,
        randomize_noise=randomize_noise,
    )

"""StyleGAN2 from the authors' own port (AtlantixJJ/LinearGAN ``stylegan2_generator_network.py``).

Their converted weights are plain state dicts (``torch.save(state_dict, "stylegan2_ffhq.pth")``)
with the same module tree as genforce's but a different storage layout: dense weights live in
an ``nn.Linear`` (``mapping.dense{i}.fc.weight``, ``*.style.fc.weight``) and conv weights keep
TensorFlow's ``(k, k, in, out)`` order. The mapping network's hidden width is their
``fmaps_max``. Their converter deletes the ``truncation.truncation`` buffer (psi baked in per
layer); a file that still has it loads too, the buffer is ignored and truncation comes from the
``truncation`` / ``truncation_layers`` options (defaults: theirs, psi 0.5 on 18 layers).

Same maths, layer order and feature maps as :mod:`lineargan.models.stylegan2_genforce` — see
that module: every synthesis conv layer's post-activation output, ToRGB excluded.
"""

from __future__ import annotations

from pathlib import Path

from lineargan.models.registry import register_generator
from lineargan.models.stylegan2_genforce import (
    AUTHORS_TRUNCATION,
    AUTHORS_TRUNCATION_LAYERS,
    StyleGAN2Generator,
    load_stylegan2,
)


@register_generator("stylegan2-lineargan")
def stylegan2_lineargan(
    checkpoint: str | Path | None = None,
    checkpoint_key: str | None = None,
    latent_space: str = "trunc-wp",
    truncation: float = AUTHORS_TRUNCATION,
    truncation_layers: int = AUTHORS_TRUNCATION_LAYERS,
    randomize_noise: bool = False,
) -> StyleGAN2Generator:
    """StyleGAN2 from the authors' state dict (bare, or under ``checkpoint_key``)."""
    return load_stylegan2(
        "lineargan",
        checkpoint,
        checkpoint_key,
        latent_space=latent_space,
        truncation=truncation,
        truncation_layers=truncation_layers,
        randomize_noise=randomize_noise,
    )

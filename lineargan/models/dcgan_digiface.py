"""The embedded default generator: a pretrained 64×64 DCGAN trained on DigiFace-1M.

Architecture of the PyTorch DCGAN tutorial (nz=100, ngf=64). The weights ship inside the
``gan-face-generate==1.1.1`` wheel (MIT; trained on DigiFace-1M, non-commercial research use).
Feature maps are the post-ReLU activations of the four hidden blocks: 512@4², 256@8², 128@16²,
64@32² (the output layer is the image and is excluded, as in Eq. 1 of the paper).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lineargan.models.protocols import (
    GeneratorAdapter,
    GeneratorOutput,
    LatentWeights,
    latent_matrix,
)
from lineargan.models.registry import register_generator
from lineargan.models.weights import (
    WheelAsset,
    fetch_wheel_asset,
    load_into,
    load_verified_state_dict,
    sha256_file,
)

DIGIFACE_WEIGHTS = WheelAsset(
    requirement="gan-face-generate==1.1.1",
    member="gan_face_generate/weights.tar",
    sha256="0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
    filename="dcgan-digiface-weights.tar",
)


class DCGANGenerator(GeneratorAdapter):
    """DCGAN generator whose ``forward`` also returns every hidden block's feature map."""

    latent_dim = 100
    resolution = 64
    layer_names = ("block0_4x4", "block1_8x8", "block2_16x16", "block3_32x32")

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.latent_dim = nz
        widths = [ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = []
        prev = nz
        for i, width in enumerate(widths):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [
                nn.ConvTranspose2d(prev, width, 4, stride, pad, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(True),
            ]
            prev = width
        layers += [nn.ConvTranspose2d(prev, nc, 4, 2, 1, bias=False), nn.Tanh()]
        # Same module names as the tutorial ("main.N.*") so its checkpoints load unchanged.
        self.main = nn.Sequential(*layers)
        self._taps = {3 * i + 2 for i in range(len(widths))}  # indices of the ReLUs

    def forward(self, latents: torch.Tensor) -> GeneratorOutput:
        x = latents.reshape(latents.shape[0], -1, 1, 1)
        features = []
        for i, layer in enumerate(self.main):
            x = layer(x)
            if i in self._taps:
                features.append(x)
        return GeneratorOutput(image=x, features=features)

    def latent_weights(self, module: str | None = None) -> LatentWeights:
        """The first transposed conv, z → the 4×4 block (before its batch norm)."""
        return LatentWeights((latent_matrix(self.main[0]),))


@register_generator("dcgan-digiface")
def dcgan_digiface(checkpoint: str | Path | None = None) -> DCGANGenerator:
    """Pretrained DigiFace DCGAN; ``checkpoint`` overrides the wheel's weights file."""
    model = DCGANGenerator()
    if checkpoint is None:
        path, sha = fetch_wheel_asset(DIGIFACE_WEIGHTS), DIGIFACE_WEIGHTS.sha256
    else:
        path, sha = Path(checkpoint), None
    state = load_verified_state_dict(path, sha256=sha, key="netG_state_dict")
    load_into(model, state, str(path))
    model.name = "dcgan-digiface"
    model.weights_sha256 = sha if sha is not None else sha256_file(path)
    return model


@register_generator("dcgan-random")
def dcgan_random(seed: int = 0) -> DCGANGenerator:
    """Randomly initialised DCGAN of the same architecture (tests and plumbing checks)."""
    torch.manual_seed(seed)
    model = DCGANGenerator()
    model.name = "dcgan-random"
    model.weights_sha256 = f"random-init-seed{seed}"
    return model

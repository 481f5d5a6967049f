"""Tiny generators for the ``torch-hooks`` tests: modules no adapter knows about.

``TupleDCGAN`` stands for a GAN whose blocks return ``(x, style)`` (as genforce's StyleGAN2
blocks do) and whose forward returns ``(image, last_features)``; ``TinyUNet`` for a diffusion
model called as ``unet(x_t, t)`` with encoder and decoder blocks and a timestep embedding.
Both count calls of their last modules, so a test can see that an early stop skipped them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CallCounter(nn.Module):
    """Identity that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


class StyleBlock(nn.Module):
    """Upsampling block returning ``(features, style)``; the ReLU is in place on purpose."""

    def __init__(self, cin: int, cout: int, first: bool) -> None:
        super().__init__()
        stride, pad = (1, 0) if first else (2, 1)
        self.conv = nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.act(self.norm(self.conv(x)))
        return y, y.mean((2, 3))


class TupleDCGAN(nn.Module):
    """z (B, nz) → ((B, 3, 32, 32) image, last block's map); a 2-D ``mapping`` layer first."""

    def __init__(self, nz: int = 8, ngf: int = 4) -> None:
        super().__init__()
        self.mapping = nn.Linear(nz, nz)
        widths = [4 * ngf, 2 * ngf, ngf]
        self.blocks = nn.ModuleList(
            StyleBlock(cin, cout, i == 0)
            for i, (cin, cout) in enumerate(zip([nz, *widths[:-1]], widths, strict=True))
        )
        self.to_rgb = nn.ConvTranspose2d(ngf, 3, 4, 2, 1)
        self.counter = CallCounter()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.mapping(z)[:, :, None, None]
        for block in self.blocks:
            x, _ = block(x)
        return self.counter(torch.tanh(self.to_rgb(x))), x


def build_dcgan(nz: int = 8, ngf: int = 4) -> TupleDCGAN:
    return TupleDCGAN(nz, ngf)


def flipped_image(net: nn.Module, z: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A custom ``call``: the image mirrored and scaled (any function of the module works)."""
    return net(z)[0].flip(-1) * scale


class DictBlock(nn.Module):
    """A module whose output is a dict with a 2-D entry before the 4-D one."""

    def __init__(self, nz: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(nz, 3 * 8 * 8)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pooled": z, "map": self.proj(z).reshape(-1, 3, 8, 8)}


class DictGenerator(nn.Module):
    def __init__(self, nz: int = 8) -> None:
        super().__init__()
        self.head = DictBlock(nz)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(z)["map"])


def build_dict_generator(nz: int = 8) -> DictGenerator:
    return DictGenerator(nz)


# -- a diffusion-style UNet -----------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs.to(t.device)[None]
    return torch.cat([args.cos(), args.sin()], 1)


class ResBlock(nn.Module):
    """Conv block with the timestep embedding added between its convolutions."""

    def __init__(self, cin: int, cout: int, tdim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv1(x)) + self.temb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(h))


class UpBlock(nn.Module):
    """Decoder block: upsample, concatenate the encoder's skip, ResBlock."""

    def __init__(self, cin: int, cskip: int, cout: int, tdim: int) -> None:
        super().__init__()
        self.res = ResBlock(cin + cskip, cout, tdim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.res(torch.cat([x, skip], 1), emb)


class TinyUNet(nn.Module):
    """ε-predicting UNet: 16² → 8² → 4² encoder, 4² → 8² → 16² decoder, called as (x_t, t)."""

    def __init__(self, ch: int = 4, tdim: int = 8, learn_sigma: bool = False) -> None:
        super().__init__()
        self.tdim = tdim
        self.time_embed = nn.Sequential(nn.Linear(tdim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList([ResBlock(ch, ch, tdim), ResBlock(ch, 2 * ch, tdim)])
        self.mid = ResBlock(2 * ch, 2 * ch, tdim)
        self.up = nn.ModuleList([UpBlock(2 * ch, 2 * ch, ch, tdim), UpBlock(ch, ch, ch, tdim)])
        self.out = nn.Conv2d(ch, 6 if learn_sigma else 3, 3, padding=1)
        self.counter = CallCounter()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.tdim))
        h = self.inp(x)
        skips = []
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
            h = F.avg_pool2d(h, 2)
        h = self.mid(h, emb)
        for block in self.up:
            h = block(h, skips.pop(), emb)
        return self.counter(self.out(h))


def build_unet(ch: int = 4, tdim: int = 8, learn_sigma: bool = False) -> TinyUNet:
    return TinyUNet(ch, tdim, learn_sigma)

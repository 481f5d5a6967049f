"""ResNeSt (split-attention ResNet) as a dilated segmentation backbone, in PyTorch-Encoding's layout.

The ADE20K DeepLabV3 checkpoints of zhanghang1989/PyTorch-Encoding store their backbone under
``pretrained.*`` with the module names of ``encoding/models/backbone/resnet.py`` +
``encoding/nn/splat.py``; this module rebuilds that network so those weights load unchanged:

- deep stem: ``conv1`` = (conv3×3 s2, BN, ReLU, conv3×3, BN, ReLU, conv3×3) → ``bn1`` → ReLU →
  3×3/2 max-pool;
- bottlenecks with a radix-2 split-attention 3×3 conv (``conv2.{conv,bn0,fc1,bn1,fc2}``),
  ``avd`` (the stride moved to a 3×3 average pool *after* the split-attention conv, in the
  first block of layers 2–4), and ``avg_down`` shortcuts (``downsample.0`` pool,
  ``.1`` 1×1 conv, ``.2`` BN);
- dilated for output stride 8: layer3 dilation 2, layer4 dilation 4 (the first block of
  layer4 uses dilation 2, exactly as the reference ``_make_layer``).

Cardinality 1 and bottleneck width 64, as in every released ResNeSt. Block counts and the
stem width per depth are those of ``encoding/models/backbone/resnest.py``; channel widths can
be scaled down (``base_planes``), which only tests use. No ImageNet classifier (the
segmentation checkpoints drop ``fc``).
"""

from __future__ import annotations

import torch
from torch import nn

# name → (blocks per stage, stem width), from PyTorch-Encoding's resnest{50,101,200,269}.
RESNEST_VARIANTS: dict[str, tuple[tuple[int, int, int, int], int]] = {
    "resnest50": ((3, 4, 6, 3), 32),
    "resnest101": ((3, 4, 23, 3), 64),
    "resnest200": ((3, 24, 36, 3), 64),
    "resnest269": ((3, 30, 48, 8), 64),
}
EXPANSION = 4


class SplitAttentionConv(nn.Module):
    """Radix-``r`` split attention (``SplAtConv2d``, cardinality 1).

    One grouped conv yields ``r`` splits; their sum is pooled, squeezed through ``fc1``/``bn1``
    and expanded by ``fc2`` into per-split channel weights, softmax-normalised across the
    splits; the output is the weighted sum of the splits.
    """

    def __init__(
        self, c_in: int, channels: int, dilation: int = 1, radix: int = 2, reduction: int = 4
    ) -> None:
        super().__init__()
        inter = max(c_in * radix // reduction, 32)
        self.radix, self.channels = radix, channels
        self.conv = nn.Conv2d(
            c_in,
            channels * radix,
            3,
            1,
            padding=dilation,
            dilation=dilation,
            groups=radix,
            bias=False,
        )
        self.bn0 = nn.BatchNorm2d(channels * radix)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, inter, 1)
        self.bn1 = nn.BatchNorm2d(inter)
        self.fc2 = nn.Conv2d(inter, channels * radix, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn0(self.conv(x)))
        b, _, h, w = x.shape
        splits = x.view(b, self.radix, self.channels, h, w)
        gap = splits.sum(1).mean((2, 3), keepdim=True)
        gap = self.relu(self.bn1(self.fc1(gap)))
        atten = self.fc2(gap).view(b, self.radix, self.channels).softmax(1)
        return (atten[..., None, None] * splits).sum(1)


class Bottleneck(nn.Module):
    """1×1 → split-attention 3×3 (→ avd pool) → 1×1 ×4, with a residual shortcut."""

    def __init__(
        self,
        c_in: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        avd: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = SplitAttentionConv(planes, planes, dilation=dilation)
        # avd: the stride happens in a pool after conv2 (parameter-free, so no state-dict keys)
        self.avd_layer = nn.AvgPool2d(3, stride, padding=1) if avd else None
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.bn1(self.conv1(x))))
        if self.avd_layer is not None:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNeSt(nn.Module):
    """Dilated ResNeSt (output stride 8); ``forward`` returns (c3, c4): the layer3 map the
    auxiliary head reads and the layer4 map the DeepLabV3 head reads."""

    def __init__(
        self, blocks: tuple[int, int, int, int], stem_width: int = 64, base_planes: int = 64
    ) -> None:
        super().__init__()
        self.blocks, self.stem_width, self.base_planes = tuple(blocks), stem_width, base_planes
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, stem_width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, stem_width * 2, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(stem_width * 2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._c_in = stem_width * 2
        p = base_planes
        self.layer1 = self._make_layer(p, blocks[0], stride=1, dilation=1, is_first=False)
        self.layer2 = self._make_layer(2 * p, blocks[1], stride=2, dilation=1)
        self.layer3 = self._make_layer(4 * p, blocks[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(8 * p, blocks[3], stride=1, dilation=4)
        self.out_channels = 8 * p * EXPANSION

    def _make_layer(
        self, planes: int, n: int, stride: int, dilation: int, is_first: bool = True
    ) -> nn.Sequential:
        """One stage; the reference's rules for the first block (avd, avg-down, dilation)."""
        out = planes * EXPANSION
        downsample = None
        if stride != 1 or self._c_in != out:
            # avg_down: the pool does the stride; kernel 1 (a no-op) in the dilated stages
            k = stride if dilation == 1 else 1
            downsample = nn.Sequential(
                nn.AvgPool2d(k, k, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(self._c_in, out, 1, bias=False),
                nn.BatchNorm2d(out),
            )
        first_dilation = 1 if dilation in (1, 2) else 2
        layers = [
            Bottleneck(
                self._c_in,
                planes,
                stride=stride,
                dilation=first_dilation,
                downsample=downsample,
                avd=stride > 1 or is_first,
            )
        ]
        self._c_in = out
        layers += [Bottleneck(out, planes, dilation=dilation) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer3(self.layer2(self.layer1(x)))
        return c3, self.layer4(c3)

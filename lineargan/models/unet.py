"""A compact UNet segmenter: the differentiable baseline that SCS and SIE back-propagate through.

The paper's SCS/SIE baseline is a pretrained face UNet. Our reference segmenter (dlib landmarks
rasterised into face classes) has no gradient, so a small UNet is trained fully supervised on
the cached (image, label) pairs instead (:mod:`lineargan.baseline`) and plays that role. The
architecture is the classic one (Ronneberger et al. 2015) at a small width: ``depth`` times
(conv-BN-ReLU ×2, 2×2 max-pool) down, a bottleneck block, then ``depth`` times (2×2
transposed conv up, concatenation with the skip of the same level, conv-BN-ReLU ×2), and a
1×1 conv to the class logits at input resolution. Transposed convolutions rather than bilinear
upsampling: their CPU backward is deterministic and they learn where thin parts (eyebrows,
lips) sit within a 2×2 block.
"""

from __future__ import annotations

import torch
from torch import nn

from lineargan.errors import LinearGanError
from lineargan.models.protocols import NetworkSegmenter


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """conv-BN-ReLU ×2 (3×3, padding 1: the resolution is kept)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SegmentationUNet(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] → logits (B, n_class, H, W); H and W divisible by
    2**depth. Level ``l`` has ``width · 2**l`` channels (the bottleneck ``width · 2**depth``)."""

    def __init__(self, n_class: int, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        if n_class < 2 or width < 1 or depth < 1:
            raise LinearGanError(
                f"a UNet needs n_class >= 2, width >= 1 and depth >= 1 (got {n_class}, {width}, "
                f"{depth})",
                "pass positive sizes and at least two classes",
            )
        self.n_class, self.width, self.depth = int(n_class), int(width), int(depth)
        chans = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(3 if level == 0 else chans[level - 1], chans[level]) for level in range(depth)]
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _block(chans[depth - 1], chans[depth])
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(chans[lv + 1], chans[lv], 2, stride=2) for lv in range(depth)]
        )
        self.merge = nn.ModuleList([_block(2 * chans[lv], chans[lv]) for lv in range(depth)])
        self.head = nn.Conv2d(chans[0], n_class, 1)

    def init_args(self) -> dict:
        return {"n_class": self.n_class, "width": self.width, "depth": self.depth}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        step = 2**self.depth
        if h % step or w % step:
            raise LinearGanError(
                f"a UNet of depth {self.depth} needs H and W divisible by {step}, got {h}×{w}",
                f"resize the images to a multiple of {step} or use a smaller depth",
            )
        skips = []
        x = images
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for level in reversed(range(self.depth)):
            x = self.up[level](x)
            x = self.merge[level](torch.cat([x, skips[level]], 1))
        return self.head(x)


class UNetSegmenter(NetworkSegmenter):
    """A trained :class:`SegmentationUNet` behind the segmenter protocol, in eval mode (batch
    statistics frozen, so an image's logits never depend on the rest of its batch).

    ``weights_sha256`` names the exact weights (the baseline's fit key); ``class_names`` are
    those of the store it was trained on.
    """

    def __init__(
        self,
        net: SegmentationUNet,
        class_names: tuple[str, ...],
        weights_sha256: str,
        name: str = "baseline-unet",
    ) -> None:
        if len(class_names) != net.n_class:
            raise LinearGanError(
                f"{len(class_names)} class names for a UNet with {net.n_class} classes",
                "pass the class names of the store the UNet was trained on",
            )
        self.net = net.eval()
        self.name = name
        self.class_names = tuple(class_names)
        self.weights_sha256 = weights_sha256

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

"""The paper's face segmenter: the authors' CelebAMask-HQ face-parsing UNet, from a user checkpoint.

Architecture and state-dict keys are those of AtlantixJJ/LinearGAN
``predictors/face_segmenter_network.py`` (``UNet``, itself taken from MaskGAN): four levels of
(conv3×3+bias, BN, ReLU)×2 with 2×2 max-pooling, a centre block, four ``unetUp`` stages
(2×2 transposed conv, concatenation with the skip, (conv-BN-ReLU)×2) and a 1×1 conv to the 15
classes. Widths are ``[64, 128, 256, 512, 1024] / feature_scale`` (4 in their checkpoint
``faceparse_unet_512.pth``); we read them off the checkpoint, so any ``feature_scale`` loads.

Pre-processing follows their ``FaceSegmenter``: the [-1, 1] image is resized bilinearly
(``align_corners=True``) to the 512-px input the network was trained on and fed as is (no
mean/std). Their wrapper clamps to [-1, 1] after the resize; here every segmenter's input is
clamped once, before it (:func:`lineargan.models.protocols.clamp_image`, by the store's
quantisation and by SCS/SIE's predictor), which differs only where pixels leave [-1, 1].
Their wrapper then resizes the *logits* back to the requested size; we always resize them to
the input image's own size, so labels are never interpolated.

The 15 classes are CelebAMask-HQ's 19 with left/right eyes, brows and ears unified and
"necklace" merged into "neck"; names and order are the authors' ``CELEBA_CATEGORY``, except
that their ``"bg"`` is spelled ``"background"`` (our class-0 convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lineargan.device import resolve_device
from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.checkpoints import (
    read_checkpoint,
    require_checkpoint,
    select_state_dict,
    strip_data_parallel,
)
from lineargan.models.protocols import NetworkSegmenter
from lineargan.models.registry import register_segmenter
from lineargan.models.weights import load_into, sha256_file

FACE_PARSER_CLASSES = (
    "background",
    "skin",
    "nose",
    "eye_g",
    "eye",
    "brow",
    "ear",
    "mouth",
    "u_lip",
    "l_lip",
    "hair",
    "hat",
    "ear_r",
    "neck",
    "cloth",
)

# Where a trainer may have put the network's weights; None: the file is the state dict itself.
STATE_DICT_KEYS: tuple[str | None, ...] = (None, "state_dict", "model", "net")


def read_state_dict(
    checkpoint: str | Path | None,
    name: str,
    what: str,
    keys: Sequence[str | None] = STATE_DICT_KEYS,
) -> tuple[dict[str, torch.Tensor], Path]:
    """The weights in ``checkpoint`` (``weights_only`` read), with a ``module.`` prefix from
    ``nn.DataParallel`` training removed, so the keys match the reference layout."""
    path = require_checkpoint(checkpoint, "segmenter", name, what)
    obj = read_checkpoint(path)
    try:
        state, _ = select_state_dict(obj, keys, path)
    except CheckpointError:
        raise CheckpointError(
            f"checkpoint {path} holds no state dict of tensors at its top level or under "
            f"{[k for k in keys if k is not None]}",
            "save the segmenter's weights with torch.save(net.state_dict(), path)",
        ) from None
    return strip_data_parallel(state), path


class _DoubleConv(nn.Module):
    """``unetConv2`` with batch norm: (conv3×3 with bias, BN, ReLU) twice; keys conv1.*, conv2.*."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU()
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(c_out, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class _Up(nn.Module):
    """``unetUp`` with a transposed conv: upsample the deeper map, concatenate [skip, up]."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = _DoubleConv(c_in, c_out)
        self.up = nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)

    def forward(self, skip: torch.Tensor, deeper: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(deeper)], 1))


class FaceParsingUNet(nn.Module):
    """The authors' UNet (``is_deconv=True``, ``is_batchnorm=True``); input side divisible by 16.

    The reference pads the skip when the upsampled map is larger (odd sizes); we require a
    multiple of 16 instead, where that padding is zero, so the computation is identical.
    """

    def __init__(self, n_classes: int = 15, base_width: int = 16) -> None:
        super().__init__()
        widths = [base_width * 2**i for i in range(5)]
        self.base_width, self.n_classes = base_width, n_classes
        self.conv1 = _DoubleConv(3, widths[0])
        self.conv2 = _DoubleConv(widths[0], widths[1])
        self.conv3 = _DoubleConv(widths[1], widths[2])
        self.conv4 = _DoubleConv(widths[2], widths[3])
        self.center = _DoubleConv(widths[3], widths[4])
        self.up_concat4 = _Up(widths[4], widths[3])
        self.up_concat3 = _Up(widths[3], widths[2])
        self.up_concat2 = _Up(widths[2], widths[1])
        self.up_concat1 = _Up(widths[1], widths[0])
        self.final = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        c2 = self.conv2(F.max_pool2d(c1, 2))
        c3 = self.conv3(F.max_pool2d(c2, 2))
        c4 = self.conv4(F.max_pool2d(c3, 2))
        y = self.center(F.max_pool2d(c4, 2))
        y = self.up_concat4(c4, y)
        y = self.up_concat3(c3, y)
        y = self.up_concat2(c2, y)
        y = self.up_concat1(c1, y)
        return self.final(y)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize as the authors' ``op.bu`` (``align_corners=True``); a no-op at the same
    size, so a 512-px image reaches the network untouched."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class FaceParserSegmenter(NetworkSegmenter):
    """The face UNet behind the segmenter protocol; frozen, eval mode, movable between devices."""

    name = "face-parser-unet"
    class_names = FACE_PARSER_CLASSES

    def __init__(
        self, net: FaceParsingUNet, input_size: int, weights_sha256: str, batch_size: int = 8
    ) -> None:
        self.net = net.eval().requires_grad_(False)
        self.input_size = int(input_size)
        self.weights_sha256 = weights_sha256
        self.batch_size = int(batch_size)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 15, H, W): the network at ``input_size``, its logits resized back to H×W."""
        size = (self.input_size, self.input_size)
        out = self.net(resize(images, size))
        return resize(out, tuple(images.shape[-2:]))


def build_face_unet(state: dict[str, torch.Tensor], source: str) -> FaceParsingUNet:
    """A :class:`FaceParsingUNet` with the width and class count read off ``state``."""
    first, final = state.get("conv1.conv1.0.weight"), state.get("final.weight")
    if first is None or final is None:
        missing = [k for k in ("conv1.conv1.0.weight", "final.weight") if k not in state]
        raise CheckpointError(
            f"checkpoint {source} is not a face-parsing UNet: missing {missing}",
            "pass the authors' faceparse_unet_512.pth or a checkpoint of the same architecture",
        )
    if final.shape[0] != len(FACE_PARSER_CLASSES):
        raise CheckpointError(
            f"checkpoint {source} predicts {final.shape[0]} classes, not the "
            f"{len(FACE_PARSER_CLASSES)} merged CelebAMask-HQ classes",
            "pass a face-parsing UNet trained on the 15 merged CelebAMask-HQ classes",
        )
    net = FaceParsingUNet(n_classes=int(final.shape[0]), base_width=int(first.shape[0]))
    load_into(net, state, source)
    return net


@register_segmenter("face-parser-unet")
def face_parser_unet(
    checkpoint: str | Path | None = None,
    input_size: int = 512,
    device: str = "auto",
    batch_size: int = 8,
) -> FaceParserSegmenter:
    """The authors' CelebAMask-HQ face UNet (15 classes) from ``checkpoint``
    (``faceparse_unet_512.pth``); images are resized to ``input_size`` for the network."""
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 16:
        raise LinearGanError(
            f"input_size must be a positive multiple of 16, got {input_size!r}",
            "use input_size=512, the size the authors' UNet was trained at",
        )
    if input_size % 16:
        raise LinearGanError(
            f"the face UNet pools four times, so input_size must be a multiple of 16, "
            f"got {input_size}",
            "use input_size=512",
        )
    state, path = read_state_dict(
        checkpoint, "face-parser-unet", "the authors' faceparse_unet_512.pth (AtlantixJJ/LinearGAN)"
    )
    net = build_face_unet(state, str(path)).to(resolve_device(device))
    return FaceParserSegmenter(net, input_size, sha256_file(path), batch_size)

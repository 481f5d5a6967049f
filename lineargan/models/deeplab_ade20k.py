"""The paper's scene segmenter: DeepLabV3 + ResNeSt trained on ADE20K (PyTorch-Encoding), from a
user checkpoint.

Architecture and state-dict keys follow zhanghang1989/PyTorch-Encoding
``encoding/models/sseg/deeplab.py`` (``DeepLabV3``: backbone under ``pretrained.*``,
``head.aspp.{b0..b4,project}``, ``head.block``, and the auxiliary ``auxlayer.conv5`` FCN head,
which the ADE20K checkpoints hold and we load but never run) with the backbone of
:mod:`lineargan.models.resnest`. The authors use ``DeepLab_ResNeSt200_ADE``, published as
``deeplab_resnest200_ade-7b9e7d3e.pth`` (sha1 ``7b9e7d3e6f0e2c763c7d77cad14d306c0a31fe05``).

Pre-processing as the authors' ``SceneSegmenter``: [-1, 1] → [0, 1] → ImageNet mean/std
(PyTorch-Encoding's ``BaseNet`` defaults). Their wrapper does not clamp; here the input is
clamped to [-1, 1] as every segmenter's is (:func:`lineargan.models.protocols.clamp_image`,
applied by the store's quantisation and by SCS/SIE's predictor, not by this class). The
network bilinearly upsamples its stride-8 logits to its input size itself. With ``input_size`` set, the image is resized to
it first and the *logits* are resized back to the image size afterwards. (The authors'
wrapper, when sizes differ, resizes the normalised *input* to the label size and returns that
in place of the logits — a bug we do not copy.)

Classes. PyTorch-Encoding's ADE20K has 150 classes and no background (ADE's "other" pixels
are ignored in training): network channel ``i`` is ADE20K class ``i + 1``
(``objectInfo150``). Our class 0 must be background, so, exactly as the authors do, a
constant zero logit is prepended as class 0 and ADE20K class ``k`` keeps index ``k``. With a
subset of classes (``classes``), again as the authors do: only the subset's logits are kept,
in ADE20K order, after the zero background logit. A pixel is therefore background when no kept
class scores above 0, and a pixel the full model would give to a dropped class falls to
background *or* to the best kept class whose logit is positive — the authors' rule, not a
relabelling of the full model's argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lineargan.device import resolve_device
from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.face_parser import read_state_dict, resize
from lineargan.models.protocols import NetworkSegmenter
from lineargan.models.registry import register_segmenter
from lineargan.models.resnest import RESNEST_VARIANTS, ResNeSt
from lineargan.models.weights import load_into, sha256_file

# ADE20K's 150 classes in network-channel order: the first name of each objectInfo150 entry
# (AtlantixJJ/LinearGAN figure/ade20k_labels.txt). Our label k + 1 is ADE20K_CLASSES[k].
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)  # fmt: skip

# The authors' per-GAN class subsets (figure/selected_labels.csv, chosen by Appx E's category
# selection), in ADE20K order. Their file names classes by the first word of the ADE20K name
# ("chest" is "chest of drawers"); here they are spelled as in ADE20K_CLASSES.
ADE20K_SUBSETS: dict[str, tuple[str, ...]] = {
    "stylegan2_bedroom": (
        "wall", "floor", "ceiling", "bed", "windowpane", "table", "curtain", "painting", "lamp",
        "cushion", "pillow", "flower", "light", "chandelier", "fan", "clock",
    ),
    "stylegan2_church": (
        "building", "sky", "tree", "road", "grass", "sidewalk", "person", "earth", "plant", "car",
        "stairs",
    ),
    "stylegan_bedroom": (
        "wall", "floor", "ceiling", "bed", "windowpane", "table", "curtain", "chair", "painting",
        "rug", "wardrobe", "lamp", "cushion", "chest of drawers", "pillow", "flower", "light",
        "chandelier", "fan",
    ),
    "stylegan_church": (
        "building", "sky", "tree", "road", "grass", "sidewalk", "person", "plant", "signboard",
        "path",
    ),
    "pggan_bedroom": (
        "wall", "floor", "ceiling", "bed", "windowpane", "table", "curtain", "painting", "lamp",
        "pillow", "light", "chandelier", "fan",
    ),
    "pggan_church": ("building", "sky", "tree", "road", "grass", "signboard"),
}  # fmt: skip

# PyTorch-Encoding BaseNet's normalisation (ImageNet statistics), used for ADE20K too.
ADE20K_MEAN = (0.485, 0.456, 0.406)
ADE20K_STD = (0.229, 0.224, 0.225)


def _conv_bn_relu(c_in: int, c_out: int, k: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = dilation if k == 3 else 0
    return [
        nn.Conv2d(c_in, c_out, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(True),
    ]


class _AsppPooling(nn.Module):
    """Image-level branch: global average → 1×1 conv-BN-ReLU → broadcast (keys ``gap.*``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(c_in, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the reference upsamples a 1×1 map bilinearly: that is a broadcast
        return self.gap(x).expand(-1, -1, *x.shape[-2:])


class _Aspp(nn.Module):
    """ASPP with rates 12/24/36 and an image-pooling branch, projected to ``c_in / 8``."""

    def __init__(self, c_in: int, rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__()
        c_out = c_in // 8
        self.b0 = nn.Sequential(*_conv_bn_relu(c_in, c_out))
        self.b1 = nn.Sequential(*_conv_bn_relu(c_in, c_out, 3, rates[0]))
        self.b2 = nn.Sequential(*_conv_bn_relu(c_in, c_out, 3, rates[1]))
        self.b3 = nn.Sequential(*_conv_bn_relu(c_in, c_out, 3, rates[2]))
        self.b4 = _AsppPooling(c_in, c_out)
        self.project = nn.Sequential(*_conv_bn_relu(5 * c_out, c_out), nn.Dropout2d(0.5, False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.b0(x), self.b1(x), self.b2(x), self.b3(x), self.b4(x)]
        return self.project(torch.cat(branches, 1))


class _DeepLabV3Head(nn.Module):
    def __init__(self, c_in: int, n_class: int) -> None:
        super().__init__()
        inter = c_in // 8
        self.aspp = _Aspp(c_in)
        self.block = nn.Sequential(
            *_conv_bn_relu(inter, inter, 3), nn.Dropout(0.1, False), nn.Conv2d(inter, n_class, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.aspp(x))


class _FCNHead(nn.Module):
    """The auxiliary head on layer3 (training only; kept so the checkpoint's keys load)."""

    def __init__(self, c_in: int, n_class: int) -> None:
        super().__init__()
        inter = c_in // 4
        self.conv5 = nn.Sequential(
            *_conv_bn_relu(c_in, inter, 3), nn.Dropout(0.1, False), nn.Conv2d(inter, n_class, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv5(x)


class DeepLabV3(nn.Module):
    """DeepLabV3 on a dilated ResNeSt: (B, 3, H, W) normalised → (B, n_class, H, W) logits."""

    def __init__(self, backbone: ResNeSt, n_class: int = 150, aux: bool = True) -> None:
        super().__init__()
        self.pretrained = backbone
        self.head = _DeepLabV3Head(backbone.out_channels, n_class)
        self.auxlayer = _FCNHead(backbone.out_channels // 2, n_class) if aux else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c4 = self.pretrained(x)
        out = self.head(c4)
        return F.interpolate(out, x.shape[-2:], mode="bilinear", align_corners=True)


def resolve_classes(classes: str | Sequence[str]) -> tuple[str, ...] | None:
    """The kept ADE20K class names for the ``classes`` option (None: all 150)."""
    if isinstance(classes, str):
        if classes == "all":
            return None
        if classes in ADE20K_SUBSETS:
            return ADE20K_SUBSETS[classes]
        raise LinearGanError(
            f"unknown ADE20K class subset {classes!r}",
            f"use classes='all', one of {sorted(ADE20K_SUBSETS)} (the authors' per-GAN "
            "subsets) or a list of ADE20K class names",
        )
    names = list(classes)
    unknown = [c for c in names if c not in ADE20K_CLASSES]
    if not names or unknown or len(set(names)) != len(names):
        raise LinearGanError(
            f"classes must list distinct ADE20K class names, got {names[:5]}"
            + (f" (unknown: {unknown[:5]})" if unknown else ""),
            "spell them as in lineargan.models.deeplab_ade20k.ADE20K_CLASSES, e.g. 'wall'",
        )
    return tuple(sorted(names, key=ADE20K_CLASSES.index))


class DeepLabADE20KSegmenter(NetworkSegmenter):
    """DeepLabV3-ResNeSt behind the segmenter protocol: class 0 is a constant zero logit, then
    all 150 ADE20K classes or the chosen subset (see the module docstring)."""

    name = "deeplabv3-ade20k"

    def __init__(
        self,
        net: DeepLabV3,
        weights_sha256: str,
        kept: tuple[str, ...] | None = None,
        input_size: int | None = None,
        batch_size: int = 8,
    ) -> None:
        self.net = net.eval().requires_grad_(False)
        self.weights_sha256 = weights_sha256
        self.input_size = input_size
        self.batch_size = int(batch_size)
        names = ADE20K_CLASSES if kept is None else kept
        self.class_names = ("background", *names)
        self._channels = None if kept is None else [ADE20K_CLASSES.index(c) for c in kept]
        self._mean = torch.tensor(ADE20K_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(ADE20K_STD).view(1, 3, 1, 1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1 + n_kept, H, W) logits at the image's own size."""
        size = tuple(images.shape[-2:])
        mean, std = self._mean.to(images), self._std.to(images)
        x = ((images + 1) / 2 - mean) / std
        if self.input_size is not None:
            x = resize(x, (self.input_size, self.input_size))
        out = self.net(x)
        if self._channels is not None:
            out = out[:, self._channels]
        out = torch.cat([torch.zeros_like(out[:, :1]), out], 1)
        return resize(out, size)


def _block_counts(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """Blocks per backbone stage, read off ``pretrained.layerN.<i>.conv1.weight`` keys."""
    counts = []
    for stage in range(1, 5):
        prefix = f"pretrained.layer{stage}."
        idx = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
        counts.append(max(idx) + 1 if idx else 0)
    return tuple(counts)


def build_deeplab(state: dict[str, torch.Tensor], backbone: str, source: str) -> DeepLabV3:
    """A :class:`DeepLabV3` for ``state``: block counts from ``backbone`` (checked against the
    checkpoint), stem and bottleneck widths and the class count read off the weights."""
    if backbone not in RESNEST_VARIANTS:
        raise LinearGanError(
            f"unknown backbone {backbone!r}", f"use one of {sorted(RESNEST_VARIANTS)}"
        )
    keys = ("pretrained.conv1.0.weight", "pretrained.layer1.0.conv1.weight", "head.block.4.weight")
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {source} is not a PyTorch-Encoding DeepLabV3-ResNeSt: missing {missing}",
            "pass a deeplab_resnest*_ade checkpoint (its keys start with 'pretrained.' and "
            "'head.')",
        )
    blocks, _ = RESNEST_VARIANTS[backbone]
    found = _block_counts(state)
    if found != blocks:
        named = [n for n, (b, _) in RESNEST_VARIANTS.items() if b == found]
        raise CheckpointError(
            f"checkpoint {source} has a backbone with {found} blocks per stage, not {backbone}'s "
            f"{blocks}",
            f"pass backbone={named[0]!r}" if named else "pass a ResNeSt-50/101/200/269 checkpoint",
        )
    n_class = int(state["head.block.4.weight"].shape[0])
    if n_class != len(ADE20K_CLASSES):
        raise CheckpointError(
            f"checkpoint {source} predicts {n_class} classes, not ADE20K's {len(ADE20K_CLASSES)}",
            "pass a DeepLabV3 trained on ADE20K (deeplab_resnest200_ade)",
        )
    net = DeepLabV3(
        ResNeSt(
            blocks,
            stem_width=int(state["pretrained.conv1.0.weight"].shape[0]),
            base_planes=int(state["pretrained.layer1.0.conv1.weight"].shape[0]),
        ),
        n_class=n_class,
        aux=any(k.startswith("auxlayer.") for k in state),
    )
    # checkpoints from before BN counted its batches lack num_batches_tracked: harmless at eval
    own = net.state_dict()
    if not any(k.endswith("num_batches_tracked") for k in state):
        state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state}
    load_into(net, state, source)
    return net


@register_segmenter("deeplabv3-ade20k")
def deeplabv3_ade20k(
    checkpoint: str | Path | None = None,
    backbone: str = "resnest200",
    classes: str | Sequence[str] = "all",
    input_size: int | None = None,
    device: str = "auto",
    batch_size: int = 8,
) -> DeepLabADE20KSegmenter:
    """DeepLabV3-ResNeSt on ADE20K from a PyTorch-Encoding ``checkpoint``.

    ``classes``: ``"all"`` (150 + background), one of the authors' per-GAN subsets
    (``stylegan2_bedroom``, ``pggan_church``, …) or a list of ADE20K names. ``input_size``:
    None runs the network at the image's own size; an int resizes the image to it first and
    the logits back.
    """
    kept = resolve_classes(classes)
    if input_size is not None and (
        isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 8
    ):
        raise LinearGanError(
            f"input_size must be None or an integer of at least 8, got {input_size!r}",
            "use input_size=None to run the network at the image's own size",
        )
    state, path = read_state_dict(
        checkpoint,
        "deeplabv3-ade20k",
        "deeplab_resnest200_ade-7b9e7d3e.pth (PyTorch-Encoding model zoo)",
    )
    net = build_deeplab(state, backbone, str(path)).to(resolve_device(device))
    return DeepLabADE20KSegmenter(net, sha256_file(path), kept, input_size, batch_size)

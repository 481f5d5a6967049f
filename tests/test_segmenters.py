"""The paper's two segmenters from user checkpoints: the authors' face UNet and DeepLabV3-ResNeSt.

Random weights are built in each reference checkpoint layout (key names spot-checked against
AtlantixJJ/LinearGAN ``predictors/face_segmenter_network.py`` and PyTorch-Encoding
``encoding/models/sseg/deeplab.py`` + ``backbone/resnest.py``), saved with ``torch.save`` and
reloaded through the registry. Widths are scaled down and images are ≤ 64 px to stay fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lineargan.models.deeplab_ade20k as dl
import lineargan.models.face_parser as fp
from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.protocols import GeneratorOutput, images_to_unit
from lineargan.models.registry import get_segmenter
from lineargan.models.resnest import RESNEST_VARIANTS, ResNeSt
from lineargan.models.weights import sha256_file
from lineargan.predictors import SegmenterPredictor


def _randomize_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so a wrongly wired or wrongly loaded BN changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


def _images(size: int, n: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def _bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)


# ---------------------------------------------------------------- face-parsing UNet


@pytest.fixture(scope="module")
def face_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = _randomize_bn(fp.FaceParsingUNet(n_classes=15, base_width=4))
    path = tmp_path_factory.mktemp("face") / "faceparse_unet_512.pth"
    torch.save(net.state_dict(), path)
    return path, net


def _face(path, **kw):
    return get_segmenter("face-parser-unet", checkpoint=str(path), device="cpu", **kw)


def test_face_parser_loads_the_authors_layout(face_ckpt):
    path, net = face_ckpt
    state = torch.load(path, weights_only=True)
    # key names of the authors' UNet (unetConv2 / unetUp / final)
    for key, shape in {
        "conv1.conv1.0.weight": (4, 3, 3, 3),
        "conv1.conv1.0.bias": (4,),
        "conv1.conv1.1.running_var": (4,),
        "conv4.conv2.1.num_batches_tracked": (),
        "center.conv2.0.weight": (64, 64, 3, 3),
        "up_concat4.up.weight": (64, 32, 2, 2),
        "up_concat4.conv.conv1.0.weight": (32, 64, 3, 3),
        "up_concat1.conv.conv2.1.bias": (4,),
        "final.weight": (15, 4, 1, 1),
        "final.bias": (15,),
    }.items():
        assert tuple(state[key].shape) == shape, key
    seg = _face(path, input_size=64)
    assert seg.net.base_width == 4  # inferred from the weights
    assert seg.class_names[0] == "background" and len(seg.class_names) == 15
    assert seg.class_names[13] == "neck" and seg.class_names[4] == "eye"
    assert seg.weights_sha256 == sha256_file(path)
    x = _images(64)
    with torch.no_grad():
        assert torch.equal(seg.logits(x), net(x))  # same weights, no resize at 64 px


def test_face_parser_resizes_the_input_and_then_the_logits(face_ckpt):
    path, net = face_ckpt
    seg = _face(path, input_size=64)
    x = _images(48)
    with torch.no_grad():
        out = seg.logits(x)
        expected = _bilinear(net(_bilinear(x, 64).clamp(-1, 1)), 48)
        assert out.shape == (2, 15, 48, 48)
        torch.testing.assert_close(out, expected)
        assert torch.equal(seg.logits(x), out)  # deterministic
        # out-of-range pixels are clamped (before the resize) by SCS/SIE's predictor, the one
        # place a float image reaches a segmenter; the authors' wrapper clamps after it
        big = _images(48) * 3
        got = SegmenterPredictor(seg, "face")(GeneratorOutput(big, []), 48)
        assert torch.equal(got, seg.logits(big.clamp(-1, 1)))
        assert not torch.equal(got, seg.logits(big))
    for size in (48, 64):
        u8 = np.random.default_rng(size).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
        labels = seg.segment(u8).labels
        assert labels.shape == (3, size, size) and labels.dtype == np.uint8
        assert labels.max() < 15
        with torch.no_grad():
            assert np.array_equal(labels, seg.logits(images_to_unit(u8)).argmax(1).numpy())


def test_face_parser_logits_are_differentiable_and_weights_frozen(face_ckpt):
    seg = _face(face_ckpt[0], input_size=64)
    x = _images(32, n=1).requires_grad_(True)
    seg.logits(x)[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in seg.net.parameters())


def test_face_parser_errors(face_ckpt, tmp_path):
    path, net = face_ckpt
    with pytest.raises(CheckpointError, match="segmenter_checkpoint .*faceparse_unet_512.pth"):
        get_segmenter("face-parser-unet")
    with pytest.raises(LinearGanError, match="multiple of 16"):
        _face(path, input_size=50)
    state = dict(net.state_dict())
    state["conv2.conv1.0.weights"] = state.pop("conv2.conv1.0.weight")
    bad = tmp_path / "renamed.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"conv2\.conv1\.0\.weight.*conv2\.conv1\.0\.weights"):
        _face(bad)
    other = fp.FaceParsingUNet(n_classes=19, base_width=4).state_dict()
    torch.save(other, tmp_path / "19.pth")
    with pytest.raises(CheckpointError, match="19 classes"):
        _face(tmp_path / "19.pth")


def test_face_parser_reads_wrapped_dataparallel_checkpoints(face_ckpt, tmp_path):
    path, net = face_ckpt
    wrapped = {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}
    torch.save(wrapped, tmp_path / "wrapped.pth")
    seg = _face(tmp_path / "wrapped.pth", input_size=64)
    x = _images(64, n=1)
    with torch.no_grad():
        assert torch.equal(seg.logits(x), net(x))


# ---------------------------------------------------------------- DeepLabV3-ResNeSt (ADE20K)


def _tiny_deeplab(seed: int = 0) -> dl.DeepLabV3:
    """ResNeSt-50 block counts at 1/8 of the widths (stem 8, planes 8): the real wiring."""
    torch.manual_seed(seed)
    blocks, _ = RESNEST_VARIANTS["resnest50"]
    return _randomize_bn(dl.DeepLabV3(ResNeSt(blocks, stem_width=8, base_planes=8)), seed)


@pytest.fixture(scope="module")
def ade_ckpt(tmp_path_factory):
    net = _tiny_deeplab()
    path = tmp_path_factory.mktemp("ade") / "deeplab_resnest50_ade.pth"
    torch.save(net.state_dict(), path)
    return path, net


def _ade(path, **kw):
    kw = {"backbone": "resnest50", "device": "cpu", **kw}
    return get_segmenter("deeplabv3-ade20k", checkpoint=str(path), **kw)


def _reference_logits(net: dl.DeepLabV3, x: torch.Tensor) -> torch.Tensor:
    """The ADE20K normalisation, the network, a zero background logit in front."""
    mean = torch.tensor(dl.ADE20K_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(dl.ADE20K_STD).view(1, 3, 1, 1)
    out = net(((x + 1) / 2 - mean) / std)
    return torch.cat([torch.zeros_like(out[:, :1]), out], 1)


def test_resnest200_deeplab_has_the_pytorch_encoding_layout():
    blocks, stem = RESNEST_VARIANTS["resnest200"]
    state = dl.DeepLabV3(ResNeSt(blocks, stem_width=stem)).state_dict()
    # names and shapes of PyTorch-Encoding's DeepLab_ResNeSt200_ADE
    for key, shape in {
        "pretrained.conv1.0.weight": (64, 3, 3, 3),
        "pretrained.conv1.1.running_mean": (64,),
        "pretrained.conv1.6.weight": (128, 64, 3, 3),
        "pretrained.bn1.weight": (128,),
        "pretrained.layer1.0.downsample.1.weight": (256, 128, 1, 1),
        "pretrained.layer1.0.conv2.conv.weight": (128, 32, 3, 3),
        "pretrained.layer1.0.conv2.fc1.weight": (32, 64, 1, 1),
        "pretrained.layer1.0.conv2.fc1.bias": (32,),
        "pretrained.layer2.0.downsample.2.running_var": (512,),
        "pretrained.layer2.23.conv3.weight": (512, 128, 1, 1),
        "pretrained.layer3.35.conv2.bn0.weight": (512,),
        "pretrained.layer4.2.conv2.fc2.weight": (1024, 256, 1, 1),
        "pretrained.layer4.2.bn3.num_batches_tracked": (),
        "head.aspp.b0.0.weight": (256, 2048, 1, 1),
        "head.aspp.b3.0.weight": (256, 2048, 3, 3),
        "head.aspp.b4.gap.1.weight": (256, 2048, 1, 1),
        "head.aspp.project.0.weight": (256, 1280, 1, 1),
        "head.block.4.weight": (150, 256, 1, 1),
        "auxlayer.conv5.0.weight": (256, 1024, 3, 3),
        "auxlayer.conv5.4.bias": (150,),
    }.items():
        assert tuple(state[key].shape) == shape, key
    assert "pretrained.layer2.24.conv1.weight" not in state
    assert not any(k.startswith("pretrained.fc.") for k in state)  # BaseNet drops fc
    assert len(state) == 1876  # the reference model's count (checked once against its code)
    assert dl._block_counts(state) == (3, 24, 36, 3)


def test_deeplab_round_trip_and_logits_at_the_image_size(ade_ckpt):
    path, net = ade_ckpt
    seg = _ade(path)
    assert seg.class_names[:4] == ("background", "wall", "building", "sky")
    assert len(seg.class_names) == 151 and seg.class_names[150] == "flag"
    assert seg.weights_sha256 == sha256_file(path)
    for size in (48, 64):
        x = _images(size)
        with torch.no_grad():
            out = seg.logits(x)
            assert out.shape == (2, 151, size, size)
            torch.testing.assert_close(out, _reference_logits(net, x))
            assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))
        u8 = np.random.default_rng(size).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
        labels = seg.segment(u8).labels
        assert labels.shape == (2, size, size) and labels.dtype == np.uint8
        assert labels.max() <= 150


def test_deeplab_input_size_resizes_the_logits_back(ade_ckpt):
    path, net = ade_ckpt
    seg = _ade(path, input_size=64)
    x = _images(48)
    with torch.no_grad():
        out = seg.logits(x)
        # network at 64 px, logits (never the input, never labels) resized back to 48 px
        mean = torch.tensor(dl.ADE20K_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(dl.ADE20K_STD).view(1, 3, 1, 1)
        raw = net(_bilinear(((x + 1) / 2 - mean) / std, 64))
        expected = _bilinear(torch.cat([torch.zeros_like(raw[:, :1]), raw], 1), 48)
    assert out.shape == (2, 151, 48, 48)
    torch.testing.assert_close(out, expected)
    labels = seg.segment(np.zeros((1, 40, 40, 3), np.uint8)).labels
    assert labels.shape == (1, 40, 40)


def _constant_class_checkpoint(tmp_path, biases: dict[str, float]):
    """A checkpoint whose logits are constant per class: -10 except ``biases``."""
    net = _tiny_deeplab()
    with torch.no_grad():
        net.head.block[4].weight.zero_()
        net.head.block[4].bias.fill_(-10.0)
        for name, value in biases.items():
            net.head.block[4].bias[dl.ADE20K_CLASSES.index(name)] = value
    path = tmp_path / f"const-{len(biases)}-{sum(biases.values())}.pth"
    torch.save(net.state_dict(), path)
    return path


def test_deeplab_class_subsets_follow_the_authors(tmp_path):
    u8 = np.zeros((1, 32, 32, 3), np.uint8)
    sky_wins = _constant_class_checkpoint(tmp_path, {"sky": 5.0, "wall": -1.0})
    assert (_ade(sky_wins).segment(u8).labels == 3).all()  # "all": ADE20K index of sky
    bedroom = _ade(sky_wins, classes="stylegan2_bedroom")
    assert bedroom.class_names == ("background", *dl.ADE20K_SUBSETS["stylegan2_bedroom"])
    assert bedroom.logits(_images(32, n=1)).shape[1] == 17
    # sky is not a bedroom class and wall's logit is below the zero background logit
    assert (bedroom.segment(u8).labels == 0).all()
    wall_positive = _constant_class_checkpoint(tmp_path, {"sky": 5.0, "wall": 1.0})
    # the authors drop the other logits: wall (subset class 1) beats background, sky is gone
    assert (_ade(wall_positive, classes="stylegan2_bedroom").segment(u8).labels == 1).all()
    custom = _ade(wall_positive, classes=["sky", "wall"])
    assert custom.class_names == ("background", "wall", "sky")  # ADE20K order
    assert (custom.segment(u8).labels == 2).all()


def test_ade20k_class_data_matches_objectinfo150():
    assert len(dl.ADE20K_CLASSES) == 150 == len(set(dl.ADE20K_CLASSES))
    # objectInfo150 indices (1-based, = our label index)
    for label, name in {1: "wall", 3: "sky", 8: "bed", 45: "chest of drawers", 150: "flag"}.items():
        assert dl.ADE20K_CLASSES[label - 1] == name
    for subset in dl.ADE20K_SUBSETS.values():
        idx = [dl.ADE20K_CLASSES.index(c) for c in subset]
        assert idx == sorted(idx)
    assert len(dl.ADE20K_SUBSETS["stylegan2_bedroom"]) == 16
    assert dl.ADE20K_SUBSETS["pggan_church"] == (
        "building", "sky", "tree", "road", "grass", "signboard",
    )  # fmt: skip


def test_deeplab_errors(ade_ckpt, tmp_path):
    path, net = ade_ckpt
    with pytest.raises(CheckpointError, match="deeplab_resnest200_ade"):
        get_segmenter("deeplabv3-ade20k")
    with pytest.raises(CheckpointError, match="backbone='resnest50'"):
        get_segmenter("deeplabv3-ade20k", checkpoint=str(path), device="cpu")
    with pytest.raises(LinearGanError, match="unknown backbone"):
        _ade(path, backbone="resnest77")
    with pytest.raises(LinearGanError, match="stylegan2_bedroom"):
        _ade(path, classes="bedroom")
    with pytest.raises(LinearGanError, match="unknown: \\['skyy'\\]"):
        _ade(path, classes=["skyy"])
    with pytest.raises(LinearGanError, match="does not take options"):
        _ade(path, input_sise=64)
    state = dict(net.state_dict())
    state["pretrained.layer2.1.conv2.fc1.w"] = state.pop("pretrained.layer2.1.conv2.fc1.weight")
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"fc1\.weight'\].*fc1\.w'\]"):
        _ade(tmp_path / "renamed.pth")

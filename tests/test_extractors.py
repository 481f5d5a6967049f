"""Semantic extractors: LSE linearity (Eq. 1-2, Appx B), NSE baselines, checkpoints, registry."""

from __future__ import annotations

import pytest
import torch

from lineargan.errors import CheckpointError, UnknownNameError
from lineargan.extractors import EXTRACTORS, LSE, NSE1, NSE2, build_extractor
from lineargan.extractors.base import upsample
from storage.checkpoints import load_extractor, save_extractor

# Channel counts shrink and resolutions double, as in the DCGAN (scaled down for speed).
DIMS = [16, 8, 6, 4]
SIZES = [4, 8, 16, 32]
N_CLASS = 5
OUT = 64


def random_features(batch: int = 3, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, s, s, generator=gen) for c, s in zip(DIMS, SIZES, strict=True)]


def randomised_lse(seed: int = 1) -> LSE:
    torch.manual_seed(seed)
    model = LSE(N_CLASS, DIMS)
    with torch.no_grad():
        for conv in model.extractor:
            conv.weight.normal_()
    return model.eval()


def test_conv1x1_commutes_with_bilinear_upsample():
    """Appx B: u↑(T_i x_i) == T_i u↑(x_i) for a 1×1 convolution T_i."""
    model = randomised_lse()
    feats = random_features()
    for conv, x in zip(model.extractor, feats, strict=True):
        w = conv.weight[:, :, 0, 0]  # (n_class, c_i)
        conv_then_up = upsample(conv(x), OUT)
        up_then_conv = torch.einsum("nc,bchw->bnhw", w, upsample(x, OUT))
        assert conv_then_up.shape == (3, N_CLASS, OUT, OUT)
        torch.testing.assert_close(conv_then_up, up_then_conv, rtol=1e-5, atol=1e-5)


def test_lse_forward_equals_matrix_times_concatenated_upsampled_features():
    """Eq. 2: S = T·X with T = [T_1 … T_N] and X the stacked upsampled features."""
    model = randomised_lse()
    feats = random_features()
    t = model.matrix()
    assert t.shape == (N_CLASS, sum(DIMS))
    x = torch.cat([upsample(f, OUT) for f in feats], dim=1)  # (B, Σc_i, H, W)
    expected = torch.einsum("nc,bchw->bnhw", t, x)
    with torch.no_grad():
        got = model(feats, OUT)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    # forward is the sum of the per-layer contributions
    with torch.no_grad():
        parts = model.layer_logits(feats, OUT)
    torch.testing.assert_close(torch.stack(parts).sum(0), got)


def test_lse_is_linear_in_features():
    model = randomised_lse()
    a, b = random_features(seed=2), random_features(seed=3)
    with torch.no_grad():
        combo = model([2.0 * x - 0.5 * y for x, y in zip(a, b, strict=True)], OUT)
        separate = 2.0 * model(a, OUT) - 0.5 * model(b, OUT)
    torch.testing.assert_close(combo, separate, rtol=1e-5, atol=1e-4)


def test_upsample_is_identity_at_output_resolution():
    x = torch.randn(2, 3, OUT, OUT)
    assert upsample(x, OUT) is x


@pytest.mark.parametrize("cls", [NSE1, NSE2])
def test_nonlinear_extractor_output_shape(cls):
    torch.manual_seed(0)
    model = cls(N_CLASS, DIMS).eval()
    with torch.no_grad():
        out = model(random_features(batch=2), OUT)
    assert out.shape == (2, N_CLASS, OUT, OUT)
    assert torch.isfinite(out).all()


def additivity_gap(model: torch.nn.Module, a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max |f(a+b) + f(0) - f(a) - f(b)|, relative to the output's scale: 0 for any affine f
    (biases included, which a homogeneity check f(2x) = 2f(x) would mistake for nonlinearity)."""
    zero = [torch.zeros_like(x) for x in a]
    with torch.no_grad():
        joint = model([x + y for x, y in zip(a, b, strict=True)], OUT) + model(zero, OUT)
        apart = model(a, OUT) + model(b, OUT)
    return float((joint - apart).abs().max() / apart.abs().max())


def test_nse1_is_not_linear():
    torch.manual_seed(0)
    model = NSE1(N_CLASS, DIMS).eval()
    a, b = random_features(seed=2), random_features(seed=3)
    assert additivity_gap(model, a, b) > 1e-2
    # the check itself: the same network with its ReLUs taken out is affine and passes it
    for block in model.extractor:
        for k, layer in enumerate(block):
            if isinstance(layer, torch.nn.ReLU):
                block[k] = torch.nn.Identity()
    assert additivity_gap(model, a, b) < 1e-5


def test_nse2_reads_every_layer():
    torch.manual_seed(0)
    model = NSE2(N_CLASS, DIMS).eval()
    feats = random_features(batch=1)
    with torch.no_grad():
        base = model(feats, OUT)
        for k in range(len(feats)):
            changed = [f.clone() for f in feats]
            changed[k] = changed[k] + 1.0
            assert not torch.allclose(model(changed, OUT), base), f"layer {k} ignored"


@pytest.mark.parametrize("kind", ["LSE", "NSE-1", "NSE-2"])
def test_save_load_round_trip(tmp_path, kind):
    torch.manual_seed(0)
    model = build_extractor(kind, n_class=N_CLASS, dims=DIMS).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the init a fresh build would produce
    save_extractor(model, tmp_path / "ckpt", metadata={"fit_key": "abc", "n": 3})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "weights.safetensors",
    ]
    loaded, meta = load_extractor(tmp_path / "ckpt")
    assert type(loaded) is type(model)
    assert meta == {"fit_key": "abc", "n": 3}
    assert not loaded.training
    feats = random_features()
    with torch.no_grad():
        assert torch.equal(loaded(feats, OUT), model(feats, OUT))


def test_save_load_keeps_nse_kernel_size(tmp_path):
    model = build_extractor("NSE-1", n_class=N_CLASS, dims=DIMS, ksize=1)
    save_extractor(model, tmp_path)
    loaded, _ = load_extractor(tmp_path)
    assert loaded.ksize == 1


def test_unknown_extractor_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        build_extractor("LSE-2", n_class=N_CLASS, dims=DIMS)
    msg = str(err.value)
    assert "\n" not in msg and "Fix:" in msg and "'LSE-2'" in msg
    for name in ("LSE", "NSE-1", "NSE-2"):
        assert name in msg
    assert set(EXTRACTORS) >= {"LSE", "NSE-1", "NSE-2"}


def test_load_unfinished_checkpoint_raises(tmp_path):
    model = build_extractor("LSE", n_class=N_CLASS, dims=DIMS)
    save_extractor(model, tmp_path)
    (tmp_path / "config.json").unlink()  # killed before the commit point
    with pytest.raises(CheckpointError, match="Fix:"):
        load_extractor(tmp_path)


def test_load_mismatched_weights_raises(tmp_path):
    save_extractor(build_extractor("LSE", n_class=N_CLASS, dims=DIMS), tmp_path / "a")
    save_extractor(build_extractor("LSE", n_class=N_CLASS + 1, dims=DIMS), tmp_path / "b")
    (tmp_path / "b" / "weights.safetensors").replace(tmp_path / "a" / "weights.safetensors")
    with pytest.raises(CheckpointError, match="Fix:"):
        load_extractor(tmp_path / "a")


def test_softplus_layer_weights_keep_the_lse_linear_and_train_at_ten_times_lr():
    """The authors' variant: S = Σ w_i·u↑(T_i x_i), w = softplus(a)/Σ softplus(a). Still one
    linear map (``matrix`` folds w in), and the optimiser sees the weights at 10× lr."""
    torch.manual_seed(0)
    feats = [torch.randn(2, 3, 2, 2), torch.randn(2, 5, 4, 4)]
    model = build_extractor("LSE", n_class=4, dims=[3, 5], layer_weights="softplus")
    with torch.no_grad():
        model.weighting.layer_weight.copy_(torch.tensor([0.3, -1.2]))
    w = torch.nn.functional.softplus(torch.tensor([0.3, -1.2]))
    w = w / w.sum()
    plain = build_extractor("LSE", n_class=4, dims=[3, 5])
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "weighting" not in k})
    layers = plain.layer_logits(feats, 4)
    torch.testing.assert_close(model(feats, 4), w[0] * layers[0] + w[1] * layers[1])
    # the folded matrix applied to the upsampled features equals the forward pass (Eq. 2)
    up = torch.cat(
        [torch.nn.functional.interpolate(f, size=(4, 4), mode="bilinear") for f in feats], 1
    )
    torch.testing.assert_close(torch.einsum("kc,bchw->bkhw", model.matrix(), up), model(feats, 4))
    groups = model.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    assert groups[1]["params"] == [model.weighting.layer_weight]
    assert model.init_args()["layer_weights"] == "softplus"
    assert "layer_weights" not in plain.init_args()  # old checkpoints keep their arguments

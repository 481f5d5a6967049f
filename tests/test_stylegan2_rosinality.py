"""StyleGAN2 from rosinality/stylegan2-pytorch checkpoints: layout, features, latents, errors."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

import lineargan.models.stylegan2_rosinality as sg2
from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.registry import get_generator

NAME = "stylegan2-rosinality"
SIZE, STYLE_DIM, N_MLP = 32, 16, 2
CHANNELS = {4: 12, 8: 12, 16: 8, 32: 6}  # narrow widths keep the tests fast on a CPU
N_LATENT = 2 * int(math.log2(SIZE)) - 2  # 8 w+ entries at 32 px
SHAPES = [(12, 4, 4), (12, 8, 8), (12, 8, 8), (8, 16, 16), (8, 16, 16), (6, 32, 32), (6, 32, 32)]
NAMES = ("conv0_4x4", "conv1_8x8", "conv2_8x8", "conv3_16x16", "conv4_16x16")
NAMES += ("conv5_32x32", "conv6_32x32")

# rosinality model.py Generator(size=8, style_dim=4, n_mlp=2).state_dict() keys, listed from
# the reference: the layout a g_ema entry must have.
REFERENCE_KEYS_SIZE8 = {
    "style.1.weight", "style.1.bias", "style.2.weight", "style.2.bias", "input.input",
    "conv1.conv.weight", "conv1.conv.modulation.weight", "conv1.conv.modulation.bias",
    "conv1.noise.weight", "conv1.activate.bias",
    "to_rgb1.conv.weight", "to_rgb1.conv.modulation.weight", "to_rgb1.conv.modulation.bias",
    "to_rgb1.bias",
    "convs.0.conv.weight", "convs.0.conv.blur.kernel", "convs.0.conv.modulation.weight",
    "convs.0.conv.modulation.bias", "convs.0.noise.weight", "convs.0.activate.bias",
    "convs.1.conv.weight", "convs.1.conv.modulation.weight", "convs.1.conv.modulation.bias",
    "convs.1.noise.weight", "convs.1.activate.bias",
    "to_rgbs.0.conv.weight", "to_rgbs.0.conv.modulation.weight",
    "to_rgbs.0.conv.modulation.bias", "to_rgbs.0.bias", "to_rgbs.0.upsample.kernel",
    "noises.noise_0", "noises.noise_1", "noises.noise_2",
}  # fmt: skip


def random_generator(seed: int) -> sg2.Generator:
    """Random weights with non-zero noise strengths and biases (zero at init), so noise,
    biases and activations all shape the output."""
    torch.manual_seed(seed)
    g = sg2.Generator(SIZE, STYLE_DIM, N_MLP, channels=CHANNELS)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith(("noise.weight", "bias")):
                p.add_(0.3 * torch.randn_like(p))
    return g.eval()


@pytest.fixture(scope="module")
def g_ema() -> sg2.Generator:
    return random_generator(0)


@pytest.fixture(scope="module")
def train_ckpt(tmp_path_factory, g_ema):
    """A train.py checkpoint: g, d, g_ema, optimiser states, args Namespace, ada_aug_p."""
    g = random_generator(1)
    path = tmp_path_factory.mktemp("ros") / "010000.pt"
    d_state = {"convs.0.0.weight": torch.randn(4, 3, 1, 1)}
    torch.save(
        {
            "g": g.state_dict(),
            "d": d_state,
            "g_ema": g_ema.state_dict(),
            "g_optim": torch.optim.Adam(g.parameters(), lr=0.002).state_dict(),
            "d_optim": torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]).state_dict(),
            "args": argparse.Namespace(size=SIZE, latent=STYLE_DIM, n_mlp=N_MLP),
            "ada_aug_p": 0.0,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def converted_ckpt(tmp_path_factory, g_ema):
    """A convert_weight.py output: g_ema plus the NVIDIA model's dlatent_avg."""
    path = tmp_path_factory.mktemp("ros") / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": g_ema.state_dict(), "latent_avg": torch.randn(STYLE_DIM)}, path)
    return path


def test_state_dict_layout_is_rosinalitys():
    with torch.device("meta"):
        g = sg2.Generator(8, 4, 2, channel_multiplier=1)
    state = g.state_dict()
    assert set(state) == REFERENCE_KEYS_SIZE8
    assert state["conv1.conv.weight"].shape == (1, 512, 512, 3, 3)
    assert state["style.1.weight"].shape == (4, 4)
    assert state["noises.noise_2"].shape == (1, 1, 8, 8)
    assert state["to_rgb1.bias"].shape == (1, 3, 1, 1)


def test_full_size_architecture_is_read_from_shapes():
    with torch.device("meta"):
        g = sg2.Generator(1024, 512, 8, channel_multiplier=2)
    arch = sg2.infer_architecture(g.state_dict(), "ffhq.pt")
    assert (arch["size"], arch["style_dim"], arch["n_mlp"]) == (1024, 512, 8)
    assert arch["channels"] == sg2.rosinality_channels(1024, 2)
    assert arch["channels"][64] == 512 and arch["channels"][1024] == 32
    assert sg2.channel_multiplier_of(arch["channels"]) == 2
    model = sg2.StyleGAN2Rosinality(
        g, sg2.StyleLatents("trunc-wp", 512, 512, g.n_latent), torch.zeros(512, device="meta")
    )
    assert g.n_latent == 18 and model.latent_dim == 18 * 512
    assert len(model.layer_names) == 17  # every synthesis conv, ToRGB excluded
    assert model.layer_names[0] == "conv0_4x4" and model.layer_names[-1] == "conv16_1024x1024"


def test_train_checkpoint_loads_g_ema_with_inferred_architecture(train_ckpt, g_ema):
    G = get_generator(NAME, checkpoint=str(train_ckpt))
    assert (G.g.size, G.g.style_dim, len(G.g.style) - 1, G.g.channels) == (
        SIZE, STYLE_DIM, N_MLP, CHANNELS,
    )  # fmt: skip
    for key, value in g_ema.state_dict().items():  # g_ema, not g, and buffers included
        assert torch.equal(G.g.state_dict()[key], value), key
    assert G.name == NAME and G.resolution == SIZE and G.latent_space == "trunc-wp"
    assert len(G.weights_sha256) == 64 and not G.training


def test_checkpoint_key_selects_the_raw_generator(train_ckpt, g_ema):
    G = get_generator(NAME, checkpoint=train_ckpt, checkpoint_key="g")
    assert not torch.equal(G.g.input.input, g_ema.input.input)
    assert torch.equal(G.g.input.input, random_generator(1).input.input)


def test_features_image_and_determinism(converted_ckpt, g_ema):
    G = get_generator(NAME, checkpoint=converted_ckpt, latent_space="wp")
    assert G.layer_names == NAMES
    assert G.layer_shapes() == SHAPES
    latents = G.sample_latents(3, seed=5)
    with torch.no_grad():
        out, again = G(latents), G(latents)
    assert out.image.shape == (3, 3, SIZE, SIZE)
    with torch.no_grad():  # the reference's own output, unclamped (consumers clamp)
        raw, _ = G.g.synthesis(G._wp(latents), G.randomize_noise)
    assert torch.equal(out.image, raw)
    assert out.image.std() > 0
    assert [tuple(f.shape) for f in out.features] == [(3, *s) for s in SHAPES]
    assert torch.equal(out.image, again.image)
    assert all(torch.equal(a, b) for a, b in zip(out.features, again.features, strict=True))
    # a fresh load gives the same pixels: the noise comes from the checkpoint's buffers
    reloaded = get_generator(NAME, checkpoint=converted_ckpt, latent_space="wp")
    with torch.no_grad():
        assert torch.equal(reloaded(latents).image, out.image)


def test_features_are_the_styled_conv_outputs_in_order(converted_ckpt):
    """The authors' StyleGAN2 features: each synthesis conv's activated output."""
    G = get_generator(NAME, checkpoint=converted_ckpt, latent_space="w")
    seen: list[torch.Tensor] = []
    convs = [G.g.conv1, *G.g.convs]
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o)) for m in convs]
    with torch.no_grad():
        out = G(G.sample_latents(2, seed=0))
    for h in hooks:
        h.remove()
    assert len(seen) == len(out.features) == 7
    assert all(a is b for a, b in zip(seen, out.features, strict=True))
    # leaky ReLU output: negative values survive (scaled by 0.2), as in the authors' maps
    assert out.features[3].min() < 0 < out.features[3].max()


def test_latent_space_dims_and_consistency(converted_ckpt):
    dims = {"z": STYLE_DIM, "w": STYLE_DIM, "wp": N_LATENT * STYLE_DIM}
    dims["trunc-wp"] = N_LATENT * STYLE_DIM
    models = {s: get_generator(NAME, checkpoint=converted_ckpt, latent_space=s) for s in dims}
    for space, model in models.items():
        assert model.latent_dim == dims[space]
        assert model.sample_latents(2, seed=3).shape == (2, dims[space])
    z = models["z"].sample_latents(2, seed=3)
    w = models["w"].sample_latents(2, seed=3)
    wp = models["wp"].sample_latents(2, seed=3)
    with torch.no_grad():
        assert torch.equal(models["z"].g.style(z), w)  # same seeded z underneath
        assert torch.equal(wp.view(2, N_LATENT, STYLE_DIM), w[:, None].expand(-1, N_LATENT, -1))
        img_z, img_w, img_wp = models["z"](z).image, models["w"](w).image, models["wp"](wp).image
    torch.testing.assert_close(img_z, img_w)
    torch.testing.assert_close(img_w, img_wp)


def test_trunc_wp_pulls_every_layer_toward_latent_avg(converted_ckpt):
    avg = torch.load(converted_ckpt)["latent_avg"]
    G = get_generator(NAME, checkpoint=converted_ckpt)  # defaults: ψ 0.5 on 18 layers
    assert torch.equal(G.w_avg, avg)
    gen = torch.Generator().manual_seed(9)
    z = torch.randn(4, STYLE_DIM, generator=gen)
    with torch.no_grad():
        w = G.g.style(z)
    want = (avg + 0.5 * (w - avg))[:, None].expand(-1, N_LATENT, -1)  # all 8 layers
    torch.testing.assert_close(G.sample_latents(4, seed=9).view(4, N_LATENT, -1), want)
    G2 = get_generator(NAME, checkpoint=converted_ckpt, truncation=0.7, truncation_layers=2)
    got = G2.sample_latents(4, seed=9).view(4, N_LATENT, -1)
    torch.testing.assert_close(got[:, :2], (avg + 0.7 * (w - avg))[:, None].expand(-1, 2, -1))
    torch.testing.assert_close(got[:, 2:], w[:, None].expand(-1, N_LATENT - 2, -1))


def test_w_avg_without_latent_avg_is_the_seeded_mapping_mean(train_ckpt, g_ema):
    G = get_generator(NAME, checkpoint=train_ckpt)
    z = torch.randn(4096, STYLE_DIM, generator=torch.Generator().manual_seed(sg2.W_AVG_SEED))
    with torch.no_grad():
        want = g_ema.style(z).mean(0)
    torch.testing.assert_close(G.w_avg, want)
    assert torch.equal(get_generator(NAME, checkpoint=train_ckpt).w_avg, G.w_avg)


def test_iter_latents_is_seeded_and_chunking_invariant(train_ckpt):
    G = get_generator(NAME, checkpoint=train_ckpt)
    a = torch.cat(list(G.iter_latents(7, seed=11, chunk_size=3)))
    b = torch.cat(list(G.iter_latents(7, seed=11, chunk_size=5)))
    assert [len(c) for c in G.iter_latents(7, seed=11, chunk_size=3)] == [3, 3, 1]
    assert a.shape == (7, N_LATENT * STYLE_DIM) and a.dtype == torch.float32
    assert a.device.type == "cpu" and not a.requires_grad
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, G.sample_latents(7, seed=12))


def test_forward_features_stops_early_and_matches_full_forward(converted_ckpt):
    G = get_generator(NAME, checkpoint=converted_ckpt, latent_space="wp")
    latents = G.sample_latents(2, seed=4)
    with torch.no_grad():
        full = G(latents).features
    ran: list[str] = []
    for name, module in G.g.named_modules():
        if name.startswith(("convs.", "to_rgb")) and name.count(".") <= 1:
            module.register_forward_hook(lambda m, i, o, name=name: ran.append(name))
    with torch.no_grad():
        for layers in ([0, 3], [2, 1], [6], [4, 4]):
            ran.clear()
            got = G.forward_features(latents, layers)
            assert len(got) == len(layers)
            assert all(torch.equal(g, full[i]) for g, i in zip(got, layers, strict=True))
            assert not any(n.startswith("to_rgb") for n in ran)  # no ToRGB when only maps
            assert f"convs.{max(layers)}" not in ran  # nothing after the last wanted conv
            assert f"convs.{max(layers) - 1}" in ran or max(layers) == 0
        assert len(G.forward_features(latents, None)) == 7 and G.forward_features(latents, []) == []


def test_gradients_reach_the_latents(converted_ckpt):
    G = get_generator(NAME, checkpoint=converted_ckpt)
    latents = G.sample_latents(1, seed=0).requires_grad_(True)
    out = G(latents)
    (out.image.mean() + out.features[2].square().mean()).backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0


def test_randomize_noise_draws_fresh_noise(converted_ckpt):
    G = get_generator(NAME, checkpoint=converted_ckpt, randomize_noise=True)
    latents = G.sample_latents(1, seed=0)
    with torch.no_grad():
        assert not torch.equal(G(latents).features[1], G(latents).features[1])


def test_renamed_key_fails_naming_it(tmp_path, g_ema):
    state = dict(g_ema.state_dict())
    state["convs.1.noise.strength"] = state.pop("convs.1.noise.weight")
    path = tmp_path / "renamed.pt"
    torch.save({"g_ema": state}, path)
    with pytest.raises(CheckpointError, match=r"missing \['convs\.1\.noise\.weight'\]") as err:
        get_generator(NAME, checkpoint=path)
    assert "unexpected ['convs.1.noise.strength']" in str(err.value)
    # a key the architecture is read from is named too
    state = dict(g_ema.state_dict())
    state["mapping.1.weight"] = state.pop("style.1.weight")
    torch.save(state, path)  # bare state dict
    with pytest.raises(CheckpointError, match=r"has no 'style\.1\.weight'"):
        get_generator(NAME, checkpoint=path)


def test_user_errors_are_one_line(tmp_path, g_ema):
    with pytest.raises(
        CheckpointError, match="no checkpoint was given. Fix: set generator_checkpoint"
    ):
        get_generator(NAME)
    path = tmp_path / "bad_avg.pt"
    torch.save({"g_ema": g_ema.state_dict(), "latent_avg": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=r"latent_avg of shape \(3,\)"):
        get_generator(NAME, checkpoint=path)
    with pytest.raises(LinearGanError, match="does not take options"):
        get_generator(NAME, checkpoint=path, size=64)
    torch.save({"g_ema": g_ema.state_dict()}, path)
    with pytest.raises(LinearGanError, match="unknown latent space"):
        get_generator(NAME, checkpoint=path, latent_space="w++")

"""PGGAN and StyleGAN (v1) adapters from genforce and from the authors' (LinearGAN) checkpoints.

Checkpoints are built here key by key in each reference layout (genforce
``models/{pggan,stylegan}_generator.py``, AtlantixJJ/LinearGAN
``models/{pggan,stylegan}_generator_network.py``), with random weights at 32 px and small
widths, saved with ``torch.save`` and reloaded through the registry.
"""

from __future__ import annotations

import re

import pytest
import torch

import lineargan.models.pggan_genforce  # noqa: F401 - registers pggan-genforce
import lineargan.models.pggan_lineargan  # noqa: F401 - registers pggan-lineargan
import lineargan.models.stylegan_genforce  # noqa: F401 - registers stylegan-genforce
import lineargan.models.stylegan_lineargan  # noqa: F401 - registers stylegan-lineargan
from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.registry import get_generator
from lineargan.models.weights import sha256_file

CHANNELS = (32, 32, 16, 8)  # 4, 8, 16, 32 px: fmaps_base 256, fmaps_max 32
Z_DIM, W_DIM, MAP_FMAPS, MAP_LAYERS = 16, 12, 20, 3
NAMES = ("block0_4x4", "block1_8x8", "block2_16x16", "block3_32x32")
SHAPES = [(32, 4, 4), (32, 8, 8), (16, 16, 16), (8, 32, 32)]


def _randn(gen: torch.Generator, *shape: int, std: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * std


def pggan_genforce_state(
    seed: int = 0, fused: bool = False, rgb: int = 3, channels: tuple[int, ...] = CHANNELS
) -> dict:
    """genforce ``PGGANGenerator`` keys: ``lod``, ``layer{k}.weight/bias``, ``output{i}.*``."""
    g = torch.Generator().manual_seed(seed)
    sd = {"lod": torch.zeros(())}
    for i, c in enumerate(channels):
        cin = Z_DIM if i == 0 else channels[i - 1]
        up = (cin, c, 3, 3) if fused else (c, cin, 3, 3)  # genforce's fused kernel is (in, out)
        first = (c, cin, 4, 4) if i == 0 else up
        sd[f"layer{2 * i}.weight"] = _randn(g, *first)
        sd[f"layer{2 * i}.bias"] = _randn(g, c, std=0.1)
        sd[f"layer{2 * i + 1}.weight"] = _randn(g, c, c, 3, 3)
        sd[f"layer{2 * i + 1}.bias"] = _randn(g, c, std=0.1)
        sd[f"output{i}.weight"] = _randn(g, rgb, c, 1, 1)
        sd[f"output{i}.bias"] = _randn(g, rgb, std=0.1)
    return sd


def pggan_port_state(genforce: dict, fused: bool = False) -> dict:
    """The same weights under the authors' names: ``conv.weight`` / fused ``weight`` stored
    (k, k, in, out), biases in ``wscale.bias``."""
    sd = {}
    for key, value in genforce.items():
        up_conv = re.fullmatch(r"layer(\d+)\.weight", key)
        if key.endswith(".bias"):
            sd[key.replace(".bias", ".wscale.bias")] = value
        elif fused and up_conv and int(up_conv[1]) % 2 == 0 and int(up_conv[1]) > 0:
            sd[key] = value.permute(2, 3, 0, 1)
        elif key.endswith(".weight"):
            sd[key.replace(".weight", ".conv.weight")] = value
        else:
            sd[key] = value
    return sd


def blur_kernel(c: int) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0])
    return (torch.outer(k, k) / 16).expand(c, 1, 3, 3).clone()


def stylegan_genforce_state(seed: int = 0) -> dict:
    """genforce ``StyleGANGenerator`` keys (mapping, truncation.w_avg, synthesis)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for i in range(MAP_LAYERS):
        cin = Z_DIM if i == 0 else MAP_FMAPS
        cout = W_DIM if i == MAP_LAYERS - 1 else MAP_FMAPS
        sd[f"mapping.dense{i}.weight"] = _randn(g, cout, cin, std=100.0)  # lr_mul 0.01
        sd[f"mapping.dense{i}.bias"] = _randn(g, cout, std=10.0)
    sd["truncation.w_avg"] = _randn(g, W_DIM)
    sd["synthesis.lod"] = torch.zeros(())
    for i, c in enumerate(CHANNELS):
        res = 4 << i
        for k in (2 * i, 2 * i + 1):
            p = f"synthesis.layer{k}"
            if k == 0:
                sd[f"{p}.const"] = _randn(g, 1, c, 4, 4)
            else:
                cin = CHANNELS[i - 1] if k == 2 * i else c
                sd[f"{p}.weight"] = _randn(g, c, cin, 3, 3)
            if k == 2 * i and i > 0:
                sd[f"{p}.blur.kernel"] = blur_kernel(c)
            sd[f"{p}.bias"] = _randn(g, c, std=0.1)
            sd[f"{p}.apply_noise.noise"] = _randn(g, 1, 1, res, res)
            sd[f"{p}.apply_noise.weight"] = _randn(g, c, std=0.5)
            sd[f"{p}.style.weight"] = _randn(g, 2 * c, W_DIM)
            sd[f"{p}.style.bias"] = _randn(g, 2 * c, std=0.1)
        sd[f"synthesis.output{i}.weight"] = _randn(g, 3, c, 1, 1)
        sd[f"synthesis.output{i}.bias"] = _randn(g, 3, std=0.1)
    return sd


STYLE_RENAMES = (  # genforce suffix -> the authors' port suffix
    (r"(mapping\.dense\d+)\.weight$", r"\1.fc.weight"),
    (r"(mapping\.dense\d+)\.bias$", r"\1.wscale.bias"),
    (r"(layer\d+)\.weight$", r"\1.conv.weight"),
    (r"(layer\d+)\.bias$", r"\1.epilogue.bias"),
    (r"(layer\d+)\.apply_noise\.", r"\1.epilogue.apply_noise."),
    (r"(layer\d+)\.style\.weight$", r"\1.epilogue.style_mod.dense.fc.weight"),
    (r"(layer\d+)\.style\.bias$", r"\1.epilogue.style_mod.dense.wscale.bias"),
    (r"(output\d+)\.weight$", r"\1.conv.weight"),
)


def stylegan_port_state(genforce: dict) -> dict:
    """The same weights under the authors' names, with the derived ``truncation.truncation``
    buffer a raw ``net.state_dict()`` would also hold."""
    sd = {}
    for key, value in genforce.items():
        for pattern, repl in STYLE_RENAMES:
            new = re.sub(pattern, repl, key)
            if new != key:
                key = new
                break
        sd[key] = value
    sd["truncation.truncation"] = torch.full((1, 2 * len(CHANNELS), 1), 0.7)
    return sd


def _save(tmp_path, name: str, obj) -> str:
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def _z(n: int = 2, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(seed))


# --- PGGAN -----------------------------------------------------------------------------------


def test_pggan_genforce_shapes_order_and_smooth_weights(tmp_path):
    smooth, raw = pggan_genforce_state(0), pggan_genforce_state(1)
    path = _save(tmp_path, "pggan.pth", {"generator": raw, "generator_smooth": smooth})
    model = get_generator("pggan-genforce", checkpoint=path)
    assert (model.name, model.latent_space, model.latent_dim) == ("pggan-genforce", "z", Z_DIM)
    assert model.resolution == 32 and model.layer_names == NAMES
    assert model.layer_shapes() == SHAPES
    assert model.weights_sha256 == sha256_file(tmp_path / "pggan.pth")
    with torch.no_grad():
        out = model(_z())
        again = model(_z())
    assert out.image.shape == (2, 3, 32, 32)
    assert torch.equal(out.image, again.image)
    assert all(torch.equal(a, b) for a, b in zip(out.features, again.features, strict=True))
    # generator_smooth (EMA) is preferred; the raw weights are one option away
    assert torch.equal(model.layer1.weight, smooth["layer1.weight"])
    raw_model = get_generator("pggan-genforce", checkpoint=path, checkpoint_key="generator")
    assert torch.equal(raw_model.layer1.weight, raw["layer1.weight"])
    assert raw_model.weights_sha256 == f"{model.weights_sha256}:generator"


def test_pggan_first_block_is_the_dense_layer_of_the_paper(tmp_path):
    """Block 0 written out: pixel-normed z through a 4×4 "dense" conv (padding 3, so output
    pixel (h, w) reads kernel tap (3-h, 3-w)), leaky ReLU, then the 3×3 conv, leaky ReLU."""
    sd = pggan_genforce_state(0)
    model = get_generator("pggan-genforce", checkpoint=_save(tmp_path, "p.pth", sd))
    z = _z()
    zn = z / z.pow(2).mean(1, keepdim=True).sqrt()
    w0 = sd["layer0.weight"].flip(2, 3) * (2**0.5 / (Z_DIM * 16) ** 0.5)
    x = torch.einsum("bc,ochw->bohw", zn, w0) + sd["layer0.bias"].view(1, -1, 1, 1)
    x = torch.nn.functional.leaky_relu(x, 0.2)
    x = x / x.pow(2).mean(1, keepdim=True).sqrt()
    w1 = sd["layer1.weight"] * (2**0.5 / (32 * 9) ** 0.5)
    x = torch.nn.functional.leaky_relu(
        torch.nn.functional.conv2d(x, w1, sd["layer1.bias"], padding=1), 0.2
    )
    with torch.no_grad():
        got = model.forward_features(z, [0])[0]
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_pggan_genforce_reads_fused_scale_off_the_weights(tmp_path, fused):
    """genforce stores a fused up-conv (in, out, 3, 3), a plain one (out, in, 3, 3): the
    32→16 and 16→8 up-convs tell them apart; the result matches the authors' port, which
    names the two kinds differently."""
    state = pggan_genforce_state(3, fused=fused)
    path = _save(tmp_path, "g.pth", {"generator_smooth": state})
    model = get_generator("pggan-genforce", checkpoint=path)
    assert model.layer_shapes() == SHAPES
    assert model.layer2.fused is fused and model.layer6.fused is fused
    port = get_generator(
        "pggan-lineargan", checkpoint=_save(tmp_path, "lg.pth", pggan_port_state(state, fused))
    )
    with torch.no_grad():
        torch.testing.assert_close(model(_z()).image, port(_z()).image, rtol=1e-4, atol=1e-4)
    assert get_generator("pggan-genforce", checkpoint=path, fused_scale=fused).layer4.fused is fused
    with pytest.raises(CheckpointError) as err:
        get_generator("pggan-genforce", checkpoint=path, fused_scale=not fused)
    kind = "fused" if fused else "plain"
    assert f"has {kind} up-convs (layer4.weight is" in str(err.value)
    assert "Fix: drop fused_scale" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("fused", [False, True])
def test_pggan_genforce_square_up_convs_need_fused_scale(tmp_path, fused):
    """A 32-px genforce PGGAN (every width 512 in the real ones) stores fused and plain
    up-convs with the same shapes: the load is refused in one line unless fused_scale says
    which, and then it gives the authors' port's images (the other setting does not)."""
    square = (8, 8, 8, 8)
    state = pggan_genforce_state(4, fused=fused, channels=square)
    path = _save(tmp_path, "sq.pth", state)
    with pytest.raises(CheckpointError) as err:
        get_generator("pggan-genforce", checkpoint=path)
    msg = str(err.value)
    assert "whether its up-convs are fused cannot be read from its weights" in msg
    assert "pass fused_scale=true" in msg and "\n" not in msg
    port = get_generator(
        "pggan-lineargan", checkpoint=_save(tmp_path, "lg.pth", pggan_port_state(state, fused))
    )
    right = get_generator("pggan-genforce", checkpoint=path, fused_scale=fused)
    wrong = get_generator("pggan-genforce", checkpoint=path, fused_scale=not fused)
    with torch.no_grad():
        want = port(_z()).image
        torch.testing.assert_close(right(_z()).image, want, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(wrong(_z()).image, want, rtol=1e-2, atol=1e-2)
    with pytest.raises(LinearGanError, match="fused_scale 'yes' is not true or false"):
        get_generator("pggan-genforce", checkpoint=path, fused_scale="yes")


@pytest.mark.parametrize("fused", [False, True])
def test_pggan_lineargan_port_matches_genforce(tmp_path, fused):
    state = pggan_genforce_state(3, fused=fused)
    gf = get_generator(
        "pggan-genforce", checkpoint=_save(tmp_path, "gf.pth", state), fused_scale=fused
    )
    port = get_generator(
        "pggan-lineargan", checkpoint=_save(tmp_path, "lg.pth", pggan_port_state(state, fused))
    )
    assert port.name == "pggan-lineargan" and port.layer_names == NAMES
    with torch.no_grad():
        a, b = gf(_z()), port(_z())
    # genforce normalises z twice, the port once: equal up to the 1e-8 epsilon
    torch.testing.assert_close(b.image, a.image, rtol=1e-4, atol=1e-4)
    for x, y in zip(b.features, a.features, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)


def test_pggan_grey_generator_gives_rgb_images(tmp_path):
    path = _save(tmp_path, "grey.pth", pggan_genforce_state(0, rgb=1))
    with torch.no_grad():
        image = get_generator("pggan-genforce", checkpoint=path)(_z()).image
    assert image.shape == (2, 3, 32, 32) and torch.equal(image[:, 0], image[:, 2])


# --- StyleGAN --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def style_ckpt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("stylegan") / "stylegan.pth"
    torch.save({"generator_smooth": stylegan_genforce_state(0), "generator": {}}, path)
    return str(path)


@pytest.mark.parametrize(
    ("space", "dim"), [("z", Z_DIM), ("w", W_DIM), ("wp", 8 * W_DIM), ("trunc-wp", 8 * W_DIM)]
)
def test_stylegan_spaces_shapes_and_order(style_ckpt, space, dim):
    model = get_generator("stylegan-genforce", checkpoint=style_ckpt, latent_space=space)
    assert (model.latent_space, model.latent_dim, model.resolution) == (space, dim, 32)
    assert model.layer_names == NAMES and model.layer_shapes() == SHAPES
    latents = model.sample_latents(3, seed=7)
    assert latents.shape == (3, dim)
    with torch.no_grad():
        out, again = model(latents), model(latents)
    assert out.image.shape == (3, 3, 32, 32)
    assert torch.equal(out.image, again.image)  # fixed noise by default


def test_stylegan_latents_follow_the_seeded_z_stream(style_ckpt):
    opts = {"checkpoint": style_ckpt, "truncation": 0.5, "truncation_layers": 3}
    z_model = get_generator("stylegan-genforce", latent_space="z", **opts)
    w_model = get_generator("stylegan-genforce", latent_space="w", **opts)
    t_model = get_generator("stylegan-genforce", latent_space="trunc-wp", **opts)
    z = torch.randn(5, Z_DIM, generator=torch.Generator().manual_seed(11))
    assert torch.equal(z_model.sample_latents(5, seed=11), z)
    # chunking never changes the stream (mapped in other batch sizes: float rounding only)
    torch.testing.assert_close(
        torch.cat(list(t_model.iter_latents(5, 11, 2))),
        torch.cat(list(t_model.iter_latents(5, 11, 5))),
    )
    w = w_model.sample_latents(5, seed=11)
    wp = t_model.sample_latents(5, seed=11).view(5, 8, W_DIM)
    w_avg = t_model.truncation.w_avg
    torch.testing.assert_close(wp[:, :3], w_avg + 0.5 * (w[:, None] - w_avg).expand(-1, 3, -1))
    assert torch.equal(wp[:, 3:], w[:, None].expand(-1, 5, -1))
    # z, w and wp spaces agree on the image of one sample
    with torch.no_grad():
        from_z = z_model(z).image
        from_w = w_model(w).image
        wp_model = get_generator("stylegan-genforce", latent_space="wp", **opts)
        from_wp = wp_model(w[:, None].expand(-1, 8, -1).flatten(1)).image
    torch.testing.assert_close(from_w, from_z)
    torch.testing.assert_close(from_wp, from_z)


def test_stylegan_block_maps_are_taken_after_style_modulation(tmp_path):
    """With a zero style weight, AdaIN is ``x * (1 + b_scale) + b_shift`` on an instance-
    normalised map: each channel of a block's map has mean b_shift and std 1 + b_scale."""
    sd = stylegan_genforce_state(1)
    shift = torch.linspace(-1, 1, CHANNELS[1])
    sd["synthesis.layer3.style.weight"].zero_()
    sd["synthesis.layer3.style.bias"] = torch.cat([torch.ones(CHANNELS[1]), shift])
    model = get_generator("stylegan-genforce", checkpoint=_save(tmp_path, "s.pth", sd))
    with torch.no_grad():
        block1 = model.forward_features(model.sample_latents(2, seed=0), [1])[0]
    torch.testing.assert_close(block1.mean((2, 3)), shift.expand(2, -1), atol=1e-4, rtol=0)
    torch.testing.assert_close(block1.std((2, 3), unbiased=False), torch.full((2, 32), 2.0))


def test_stylegan_randomize_noise_changes_images(style_ckpt):
    model = get_generator("stylegan-genforce", checkpoint=style_ckpt, randomize_noise=True)
    latents = model.sample_latents(2, seed=0)
    with torch.no_grad():
        assert not torch.equal(model(latents).image, model(latents).image)


def test_stylegan_lineargan_port_matches_genforce(tmp_path, style_ckpt):
    state = stylegan_genforce_state(0)
    port = get_generator(
        "stylegan-lineargan", checkpoint=_save(tmp_path, "lg.pth", stylegan_port_state(state))
    )
    gf = get_generator("stylegan-genforce", checkpoint=style_ckpt)
    assert port.name == "stylegan-lineargan" and port.layer_names == NAMES
    latents = gf.sample_latents(2, seed=4)
    torch.testing.assert_close(port.sample_latents(2, seed=4), latents)
    with torch.no_grad():
        a, b = gf(latents), port(latents)
    torch.testing.assert_close(b.image, a.image)
    for x, y in zip(b.features, a.features, strict=True):
        torch.testing.assert_close(x, y)


def test_stylegan_fused_up_convs(tmp_path):
    """genforce keeps fused kernels (out, in, 3, 3), the port (3, 3, in, out): same output."""
    state = stylegan_genforce_state(2)
    gf = get_generator(
        "stylegan-genforce", checkpoint=_save(tmp_path, "gf.pth", state), fused_scale=True
    )
    port_state = stylegan_port_state(state)
    for k in (2, 4, 6):
        conv = port_state.pop(f"synthesis.layer{k}.conv.weight")
        port_state[f"synthesis.layer{k}.weight"] = conv.permute(2, 3, 1, 0)
    port = get_generator("stylegan-lineargan", checkpoint=_save(tmp_path, "lg.pth", port_state))
    plain = get_generator("stylegan-genforce", checkpoint=str(tmp_path / "gf.pth"))
    latents = gf.sample_latents(2, seed=1)
    with torch.no_grad():
        fused_image = gf(latents).image
        torch.testing.assert_close(port(latents).image, fused_image)
        assert not torch.allclose(plain(latents).image, fused_image)
    with pytest.raises(LinearGanError, match="fused_scale 'yes'"):
        get_generator("stylegan-genforce", checkpoint=str(tmp_path / "gf.pth"), fused_scale="yes")


# --- both families ---------------------------------------------------------------------------


def _checkpoints(tmp_path) -> dict[str, str]:
    pg = pggan_genforce_state(0)
    sg = stylegan_genforce_state(0)
    return {
        "pggan-genforce": _save(tmp_path, "pg.pth", {"generator_smooth": pg}),
        "pggan-lineargan": _save(tmp_path, "pgl.pth", pggan_port_state(pg)),
        "stylegan-genforce": _save(tmp_path, "sg.pth", {"generator_smooth": sg}),
        "stylegan-lineargan": _save(tmp_path, "sgl.pth", stylegan_port_state(sg)),
    }


@pytest.mark.parametrize(
    "name", ["pggan-genforce", "pggan-lineargan", "stylegan-genforce", "stylegan-lineargan"]
)
def test_forward_features_subset_matches_and_stops_early(tmp_path, name):
    model = get_generator(name, checkpoint=_checkpoints(tmp_path)[name])
    latents = model.sample_latents(2, seed=3)
    synthesis = getattr(model, "synthesis", model)
    ran = []
    synthesis.layer7.register_forward_hook(lambda *_: ran.append(True))
    with torch.no_grad():
        full = model(latents).features
        assert ran == [True]
        subset = model.forward_features(latents, [2, 0])
        assert ran == [True]  # blocks after 16×16 (layers 6, 7) never ran
        everything = model.forward_features(latents)
    assert torch.equal(subset[0], full[2]) and torch.equal(subset[1], full[0])
    assert all(torch.equal(a, b) for a, b in zip(everything, full, strict=True))


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("pggan-genforce", "layer3.bias"),
        ("pggan-lineargan", "layer5.wscale.bias"),
        ("stylegan-genforce", "synthesis.layer3.style.bias"),
        ("stylegan-lineargan", "synthesis.layer4.epilogue.apply_noise.weight"),
    ],
)
def test_renamed_key_is_named_in_the_error(tmp_path, name, key):
    path = _checkpoints(tmp_path)[name]
    obj = torch.load(path, weights_only=True)
    state = obj.get("generator_smooth", obj)
    state[key.replace("bias", "b").replace("weight", "w")] = state.pop(key)
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=re.escape(f"missing ['{key}']")) as err:
        get_generator(name, checkpoint=path)
    assert "unexpected" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "key"),
    [("pggan-genforce", "output0.weight"), ("stylegan-lineargan", "synthesis.layer3.conv.weight")],
)
def test_missing_architecture_key_is_named(tmp_path, name, key):
    path = _checkpoints(tmp_path)[name]
    obj = torch.load(path, weights_only=True)
    state = obj.get("generator_smooth", obj)
    del state[key]
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=re.escape(repr(key))):
        get_generator(name, checkpoint=path)


def test_refusals(tmp_path):
    paths = _checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match="generator_checkpoint"):
        get_generator("stylegan-genforce")
    with pytest.raises(CheckpointError, match="not a StyleGAN generator"):
        get_generator("stylegan-genforce", checkpoint=paths["pggan-genforce"])
    with pytest.raises(CheckpointError, match="not a PGGAN generator"):
        get_generator("pggan-lineargan", checkpoint=paths["pggan-genforce"])
    growing = pggan_genforce_state(0) | {"lod": torch.tensor(1.5)}
    with pytest.raises(CheckpointError, match=r"while growing \(lod = 1.5\)"):
        get_generator("pggan-genforce", checkpoint=_save(tmp_path, "grow.pth", growing))
    with pytest.raises(LinearGanError, match="unknown latent space 'x'"):
        get_generator("stylegan-genforce", checkpoint=paths["stylegan-genforce"], latent_space="x")

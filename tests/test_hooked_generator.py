"""The generic ``torch-hooks`` adapter on modules it has never seen (tests/hook_models.py)."""

from __future__ import annotations

import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import lineargan.models.hooked  # noqa: F401 - registers "torch-hooks"
from lineargan.cache import generate_and_label
from lineargan.config import DatasetConfig
from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.hooked import alpha_bar
from lineargan.models.protocols import Segmenter, SegmenterOutput
from lineargan.models.registry import get_generator
from tests import hook_models

DCGAN = {
    "builder": "tests.hook_models:build_dcgan",
    "builder_kwargs": {"nz": 8, "ngf": 4},
    "layers": ["blocks.0", "blocks.1", "blocks.2"],
    "latent_shape": [8],
}
UNET = {
    "builder": "tests.hook_models:build_unet",
    "layers": ["up.0", "up.1"],
    "call": "denoiser",
    "resolution": 16,
}


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Fix:" in msg, msg
    return msg


def manual_hooks(net: torch.nn.Module, names: list[str], *args: torch.Tensor):
    """Reference: the net's own forward with plain hooks keeping each module's first tensor."""
    got: dict[str, torch.Tensor] = {}
    modules = dict(net.named_modules())

    def keep(name):
        def hook(_m, _a, out):
            got[name] = (out[0] if isinstance(out, tuple) else out).clone()

        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in names]
    try:
        out = net(*args)
    finally:
        for h in handles:
            h.remove()
    return out, [got[n] for n in names]


def save_state(tmp_path: Path, net: torch.nn.Module, name: str = "g.pt", prefix: str = "") -> Path:
    """Random weights (BatchNorm statistics included) in a ``{"state_dict": ...}`` checkpoint."""
    with torch.no_grad():
        for key, p in net.state_dict().items():
            if key.endswith("running_var"):
                p.copy_(torch.rand_like(p) + 0.5)
            elif p.is_floating_point():
                p.copy_(torch.randn_like(p) * 0.3)
    path = tmp_path / name
    torch.save({"state_dict": {prefix + k: v for k, v in net.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def dcgan():
    return get_generator("torch-hooks", random_init=True, seed=3, **DCGAN)


def test_features_and_image_equal_a_manual_hooked_forward(dcgan):
    assert (dcgan.name, dcgan.latent_dim, dcgan.resolution) == ("torch-hooks", 8, 32)
    assert dcgan.layer_names == ("blocks.0", "blocks.1", "blocks.2")
    z = dcgan.sample_latents(3, seed=0)
    with torch.no_grad():
        out = dcgan(z)
        (image, _), expected = manual_hooks(dcgan.net, list(DCGAN["layers"]), z)
    assert torch.equal(out.image, image) and out.image.shape == (3, 3, 32, 32)
    assert [tuple(f.shape) for f in out.features] == [(3, 16, 4, 4), (3, 8, 8, 8), (3, 4, 16, 16)]
    for got, want in zip(out.features, expected, strict=True):
        assert torch.equal(got, want)
    assert dcgan.layer_shapes() == [(16, 4, 4), (8, 8, 8), (4, 16, 16)]


def test_latents_are_seeded_chunked_standard_normal(dcgan):
    a = torch.cat(list(dcgan.iter_latents(5, seed=7, chunk_size=2)))
    gen = torch.Generator().manual_seed(7)
    assert torch.equal(
        a,
        torch.cat(
            [torch.randn(2, 8, generator=gen) for _ in range(2)]
            + [torch.randn(1, 8, generator=gen)]
        ),
    )
    assert not torch.equal(a, dcgan.sample_latents(5, seed=8))


def test_forward_features_stops_after_the_last_needed_module(dcgan):
    z = dcgan.sample_latents(2, seed=1)
    counter, later = dcgan.net.counter, dcgan.net.blocks[2]
    calls = []
    handle = later.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            full = dcgan(z).features
            assert counter.calls >= 1 and len(calls) == 1
            before = counter.calls
            (first,) = dcgan.forward_features(z, [0])
            assert counter.calls == before and len(calls) == 1  # blocks.2 and the image: skipped
            two = dcgan.forward_features(z, [1, 0])
            assert len(calls) == 1
            everything = dcgan.forward_features(z)
            assert len(calls) == 2 and counter.calls == before  # last hooked ran, image did not
    finally:
        handle.remove()
    assert torch.equal(first, full[0])
    assert torch.equal(two[0], full[1]) and torch.equal(two[1], full[0])
    assert all(torch.equal(a, b) for a, b in zip(everything, full, strict=True))


def test_gradients_flow_to_the_latents(dcgan):
    z = dcgan.sample_latents(2, seed=2).requires_grad_(True)
    out = dcgan(z)
    (out.image.sum() + out.features[0].sum()).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_state_dict_checkpoint_reloads_and_hash_tracks_file_and_options(tmp_path):
    net = hook_models.build_dcgan(8, 4)
    path = save_state(tmp_path, net)
    g = get_generator("torch-hooks", checkpoint=str(path), **DCGAN)
    z = torch.randn(2, 8)
    with torch.no_grad():
        want = net.eval()(z)[0]
        assert (want.abs() < 0.99).any()  # not saturated: equality below means something
        assert torch.equal(g(z).image, want)
    again = get_generator("torch-hooks", checkpoint=str(path), **DCGAN)
    assert again.weights_sha256 == g.weights_sha256
    fewer = get_generator("torch-hooks", checkpoint=str(path), **{**DCGAN, "layers": ["blocks.0"]})
    assert fewer.weights_sha256 != g.weights_sha256  # options that change outputs count
    dp = save_state(tmp_path, hook_models.build_dcgan(8, 4), "dp.pt", prefix="module.")
    other = get_generator("torch-hooks", checkpoint=str(dp), **DCGAN)  # DataParallel prefix
    assert other.weights_sha256 != g.weights_sha256
    with torch.no_grad():
        assert not torch.equal(other(z).image, want)
        assert not torch.equal(other(z).features[0], g(z).features[0])


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path):
    path = save_state(tmp_path, hook_models.build_dcgan(8, 8))
    with pytest.raises(CheckpointError) as err:
        get_generator("torch-hooks", checkpoint=str(path), **DCGAN)
    assert "wrong shape" in one_line(err) and "blocks.0.conv.weight" in str(err.value)
    torch.save({"optimizer": {"lr": 1.0}}, tmp_path / "opt.pt")
    with pytest.raises(CheckpointError, match="checkpoint_key"):
        get_generator("torch-hooks", checkpoint=str(tmp_path / "opt.pt"), **DCGAN)


def test_weights_are_required_unless_random_init_is_explicit():
    with pytest.raises(CheckpointError) as err:
        get_generator("torch-hooks", **DCGAN)
    assert "random_init" in one_line(err) and "checkpoint" in str(err.value)
    a = get_generator("torch-hooks", random_init=True, seed=1, **DCGAN)
    b = get_generator("torch-hooks", random_init=True, seed=1, **DCGAN)
    c = get_generator("torch-hooks", random_init=True, seed=2, **DCGAN)
    w = "blocks.0.conv.weight"
    assert torch.equal(a.net.state_dict()[w], b.net.state_dict()[w])
    assert not torch.equal(a.net.state_dict()[w], c.net.state_dict()[w])
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256


def test_yaml_spec_with_relative_paths_and_explicit_overrides(tmp_path):
    shutil.copy(Path(hook_models.__file__), tmp_path / "my_gan.py")
    net = hook_models.build_dcgan(8, 4)
    save_state(tmp_path, net, "weights.pt")
    spec = tmp_path / "generator.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "builder": "my_gan.py:build_dcgan",  # relative to the YAML file
                "builder_kwargs": {"nz": 8, "ngf": 4},
                "checkpoint": "weights.pt",
                "layers": ["blocks.0", "blocks.1"],
                "latent_shape": [8],
                "call": "tests.hook_models:flipped_image",
                "call_kwargs": {"scale": 0.5},
            }
        )
    )
    g = get_generator("torch-hooks", spec=str(spec))
    z = torch.randn(2, 8)
    with torch.no_grad():
        image, feats = net.eval()(z)[0], manual_hooks(net, ["blocks.0", "blocks.1"], z)[1]
        out = g(z)
    assert torch.equal(out.image, image.flip(-1) * 0.5)
    assert all(torch.equal(a, b) for a, b in zip(out.features, feats, strict=True))
    # explicit options win; a dict option is merged key by key
    h = get_generator("torch-hooks", spec=str(spec), layers=["blocks.2"], call_kwargs={"scale": 1})
    assert h.layer_names == ("blocks.2",)
    with torch.no_grad():
        assert torch.equal(h(z).image, image.flip(-1))
    assert h.weights_sha256 != g.weights_sha256
    # the user's file is identified by content: editing it invalidates stores
    (tmp_path / "my_gan.py").write_text((tmp_path / "my_gan.py").read_text() + "\n# edited\n")
    assert get_generator("torch-hooks", spec=str(spec)).weights_sha256 != g.weights_sha256


def test_yaml_spec_errors_are_one_line(tmp_path):
    spec = tmp_path / "g.yaml"
    spec.write_text("builder: tests.hook_models:build_dcgan\nlayer: [blocks.0]\n")
    with pytest.raises(LinearGanError) as err:
        get_generator("torch-hooks", spec=str(spec), random_init=True)
    assert "'layer'" in one_line(err) and "layers" in str(err.value)
    spec.write_text("builder: [unclosed\n")
    with pytest.raises(LinearGanError, match="not valid YAML at line"):
        get_generator("torch-hooks", spec=str(spec))
    with pytest.raises(LinearGanError, match="does not exist"):
        get_generator("torch-hooks", spec=str(tmp_path / "missing.yaml"))


def test_unknown_layer_lists_close_matches():
    with pytest.raises(LinearGanError) as err:
        get_generator("torch-hooks", random_init=True, **{**DCGAN, "layers": ["block.1"]})
    msg = one_line(err)
    assert "'block.1'" in msg and "blocks.1" in msg


def test_non_4d_output_names_the_module_and_shape():
    with pytest.raises(LinearGanError) as err:
        get_generator("torch-hooks", random_init=True, **{**DCGAN, "layers": ["mapping"]})
    assert "'mapping'" in one_line(err) and "(1, 8)" in str(err.value)
    # tuple_index picks the block's second output, the 2-D style vector: refused by name
    bad = {**DCGAN, "tuple_index": {"blocks.1": 1}, "resolution": 32}
    g = get_generator("torch-hooks", random_init=True, **bad)  # resolution given: no probe
    with pytest.raises(LinearGanError) as err:
        g(torch.zeros(2, 8))
    assert "'blocks.1'" in one_line(err) and "(2, 8)" in str(err.value)


def test_dict_outputs_default_to_the_first_tensor_or_the_named_key():
    opts = {
        "builder": "tests.hook_models:build_dict_generator",
        "layers": ["head"],
        "latent_shape": [8],
        "random_init": True,
    }
    with pytest.raises(LinearGanError, match=r"'head'.*\(1, 8\)"):
        get_generator("torch-hooks", **opts)  # first tensor: the 2-D "pooled"
    g = get_generator("torch-hooks", tuple_index="map", **opts)
    assert g.resolution == 8 and g.layer_shapes() == [(3, 8, 8)]
    with pytest.raises(LinearGanError, match="no element 'nope'"):
        get_generator("torch-hooks", tuple_index="nope", **opts)


def test_option_mistakes_are_one_line_errors():
    cases = [
        ({**DCGAN, "builder": "tests.hook_models:nope"}, "cannot be loaded"),
        ({**DCGAN, "builder": "no_such_pkg.mod:f"}, "cannot be loaded"),
        ({**DCGAN, "builder_kwargs": {"width": 3}}, "refused builder_kwargs"),
        ({k: v for k, v in DCGAN.items() if k != "latent_shape"}, "needs latent_shape"),
        ({**DCGAN, "timestep": 3}, "apply only to call: denoiser"),
        ({**DCGAN, "layers": ["blocks.0", "blocks.0"]}, "listed twice"),
        ({**DCGAN, "latent_shape": [0]}, "'latent_shape.0' is invalid"),
        ({**UNET}, "needs a timestep"),
        ({**UNET, "timestep": 1000}, "not below num_timesteps"),
    ]
    for opts, fragment in cases:
        with pytest.raises(LinearGanError) as err:
            get_generator("torch-hooks", random_init=True, **opts)
        assert fragment in one_line(err), (opts, str(err.value))


# -- a diffusion UNet's decoder blocks at one timestep --------------------------------------


def ddpm_alpha_bar(t: int) -> float:
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    return float(torch.prod(1 - betas[: t + 1]))


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_unet_decoder_blocks_at_a_timestep(tmp_path, learn_sigma):
    net = hook_models.build_unet(learn_sigma=learn_sigma)
    path = save_state(tmp_path, net)
    kw = {"builder_kwargs": {"learn_sigma": learn_sigma}, "checkpoint": str(path)}
    g = get_generator("torch-hooks", timestep=600, **UNET, **kw)
    assert (g.latent_dim, g.latent_space, g.resolution) == (3 * 16 * 16, "x_t", 16)
    x_t = g.sample_latents(2, seed=0)
    t = torch.full((2,), 600, dtype=torch.long)
    with torch.no_grad():
        out = g(x_t)
        eps, feats = manual_hooks(net.eval(), ["up.0", "up.1"], x_t.reshape(2, 3, 16, 16), t)
    ab = ddpm_alpha_bar(600)
    x0 = (x_t.reshape(2, 3, 16, 16) - (1 - ab) ** 0.5 * eps[:, :3]) / ab**0.5  # not clamped
    assert torch.allclose(out.image, x0, atol=1e-6)
    assert [tuple(f.shape[1:]) for f in out.features] == [(4, 8, 8), (4, 16, 16)]
    assert all(torch.equal(a, b) for a, b in zip(out.features, feats, strict=True))
    # the timestep reaches the network and the store identity
    early = get_generator("torch-hooks", timestep=10, **UNET, **kw)
    with torch.no_grad():
        assert not torch.equal(early(x_t).features[0], out.features[0])
    assert early.weights_sha256 != g.weights_sha256
    # fitting from regenerated features skips the output convolution
    before = g.net.counter.calls
    with torch.no_grad():
        (f0,) = g.forward_features(x_t, [0])
    assert g.net.counter.calls == before and torch.equal(f0, out.features[0])


def test_noise_schedules_and_predictions():
    assert alpha_bar("linear", 1000, 600) == pytest.approx(ddpm_alpha_bar(600), rel=1e-12)
    assert alpha_bar("cosine", 1000, 0) == pytest.approx(1.0, abs=1e-3)
    assert alpha_bar("cosine", 1000, 999) < 1e-4 < alpha_bar("cosine", 1000, 500)
    sample = get_generator(
        "torch-hooks", random_init=True, timestep=999, prediction="sample", **UNET
    )
    x_t = torch.randn(1, 3 * 16 * 16)
    with torch.no_grad():
        raw = sample.net(x_t.reshape(1, 3, 16, 16), torch.tensor([999]))
        assert torch.equal(sample(x_t).image, raw)


def test_a_later_in_place_op_does_not_rewrite_a_captured_map(dcgan):
    g = get_generator(
        "torch-hooks", random_init=True, seed=3, **{**DCGAN, "layers": ["blocks.0.norm"]}
    )
    with torch.no_grad():
        (norm,) = g(g.sample_latents(2, seed=0)).features
    assert norm.min() < 0  # the block's ReLU(inplace=True) ran on this very tensor afterwards


def test_a_pickled_copy_hooks_its_own_module(dcgan):
    copy = pickle.loads(pickle.dumps(dcgan))
    z = dcgan.sample_latents(2, seed=4)
    with torch.no_grad():
        a, b = dcgan(z), copy(z)
    assert copy.net is not dcgan.net and copy.weights_sha256 == dcgan.weights_sha256
    assert all(torch.equal(x, y) for x, y in zip(a.features, b.features, strict=True))


class Brightness(Segmenter):
    """Label 1 where the pixel is brighter than mid-grey: enough to run the cache stage."""

    name, class_names = "brightness", ("background", "bright")

    def segment(self, images: np.ndarray) -> SegmenterOutput:
        labels = (images.mean(-1) > 127).astype(np.uint8)
        return SegmenterOutput(labels=labels, detected=np.ones(len(images), bool))


def test_config_options_reach_the_cache_stage(tmp_path):
    spec = tmp_path / "unet.yaml"
    spec.write_text(yaml.safe_dump({**UNET, "timestep": 900, "random_init": True}))
    cfg = DatasetConfig(
        generator="torch-hooks", generator_options={"spec": str(spec), "layers": ["up.1"]}
    )
    g = get_generator(cfg.generator, **cfg.generator_kwargs())
    assert g.layer_names == ("up.1",)
    latents = np.concatenate(list(g.iter_latents(3, seed=0, chunk_size=2))).astype(np.float32)
    with torch.no_grad():
        batch = generate_and_label(g, Brightness(), latents, torch.device("cpu"))
    assert batch.images.shape == (3, 16, 16, 3) and batch.labels.shape == (3, 16, 16)
    assert [f.shape for f in batch.features] == [(3, 4, 16, 16)]
    with pytest.raises(LinearGanError) as err:
        DatasetConfig(generator="torch-hooks", generator_options={"layer": ["up.1"]})
    assert "'layers'" in one_line(err)


def test_passes_on_two_threads_keep_their_own_features():
    """B pauses mid-pass, C starts and pauses, B finishes while C's pass is open: a capture
    shared between threads would give B's later maps to C."""
    g = get_generator("torch-hooks", random_init=True, seed=5, **DCGAN)
    zs = {"B": g.sample_latents(2, seed=10), "C": g.sample_latents(2, seed=11)}
    with torch.no_grad():
        solo = {k: g(z).features for k, z in zs.items()}
    paused = {k: threading.Event() for k in zs}
    resume = {k: threading.Event() for k in zs}
    got: dict[str, list[torch.Tensor]] = {}

    def pause(*_):  # between blocks.0 and blocks.1
        me = threading.current_thread().name
        if me in paused:
            paused[me].set()
            resume[me].wait(10)

    def run(name):
        with torch.no_grad():
            got[name] = g(zs[name]).features

    handle = g.net.blocks[1].register_forward_pre_hook(pause)
    threads = {k: threading.Thread(target=run, args=(k,), name=k) for k in zs}
    try:
        threads["B"].start()
        assert paused["B"].wait(10)
        threads["C"].start()
        assert paused["C"].wait(10)
        resume["B"].set()
        threads["B"].join(10)
        resume["C"].set()
        threads["C"].join(10)
    finally:
        for event in resume.values():
            event.set()
        handle.remove()
    for name in zs:
        assert all(torch.equal(x, y) for x, y in zip(got[name], solo[name], strict=True)), name

"""StyleGAN2 in genforce's and the authors' checkpoint layouts, loaded from files on disk.

The checkpoints are written from key/shape tables spelled out here after the reference code
(genforce/genforce ``models/stylegan2_generator.py``; AtlantixJJ/LinearGAN
``models/stylegan2_generator_network.py``), not from the adapter's own ``state_dict``, so a
wrong key name or shape in the adapter fails these tests. 32 px with tiny widths keeps it fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lineargan.models.stylegan2_genforce  # noqa: F401 - registers stylegan2-genforce
import lineargan.models.stylegan2_lineargan  # noqa: F401 - registers stylegan2-lineargan
from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.registry import get_generator
from lineargan.models.stylegan2_blocks import fmaps_channels
from lineargan.models.weights import sha256_file

Z_DIM, W_DIM, HIDDEN, N_MAPPING = 16, 16, 24, 2
CHANNELS = {4: 32, 8: 32, 16: 16, 32: 8}  # fmaps_base=256, fmaps_max=32 at 32 px
N_CONV = 7  # layer0 at 4 px, then two per block at 8, 16, 32 px
LAYER_SHAPES = [(32, 4, 4), (32, 8, 8), (32, 8, 8), (16, 16, 16), (16, 16, 16)]
LAYER_SHAPES += [(8, 32, 32), (8, 32, 32)]


def reference_shapes(layout: str, architecture: str = "skip") -> dict[str, tuple[int, ...]]:
    """Every key of the reference generator's state dict with its shape."""
    tf = layout == "lineargan"

    def dense(prefix: str, n_in: int, n_out: int) -> dict[str, tuple[int, ...]]:
        weight = f"{prefix}.fc.weight" if tf else f"{prefix}.weight"
        return {weight: (n_out, n_in), f"{prefix}.bias": (n_out,)}

    def conv(name: str, n_in: int, n_out: int, res: int, k: int = 3, rgb: bool = False) -> dict:
        out = {f"{name}.weight": (k, k, n_in, n_out) if tf else (n_out, n_in, k, k)}
        out[f"{name}.bias"] = (n_out,)
        out.update(dense(f"{name}.style", W_DIM, n_in))
        if not rgb:
            out[f"{name}.noise"] = (1, 1, res, res)
            out[f"{name}.noise_strength"] = ()
        return out

    dims = [Z_DIM] + [HIDDEN] * (N_MAPPING - 1) + [W_DIM]
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(N_MAPPING):
        shapes.update(dense(f"mapping.dense{i}", dims[i], dims[i + 1]))
    shapes["truncation.w_avg"] = (W_DIM,)
    shapes["synthesis.early_layer.const"] = (1, CHANNELS[4], 4, 4)
    resolutions = sorted(CHANNELS)
    for b, res in enumerate(resolutions):
        if b:
            up = f"synthesis.layer{2 * b - 1}"
            shapes.update(conv(up, CHANNELS[res // 2], CHANNELS[res], res))
            shapes[f"{up}.filter.kernel"] = (1, 1, 4, 4)
        shapes.update(conv(f"synthesis.layer{2 * b}", CHANNELS[res], CHANNELS[res], res))
        if architecture == "skip" or res == resolutions[-1]:
            shapes.update(conv(f"synthesis.output{b}", CHANNELS[res], 3, res, k=1, rgb=True))
    if architecture == "skip":
        shapes["synthesis.upsample.kernel"] = (1, 1, 4, 4)
    return shapes


def random_state(layout: str, architecture: str = "skip", seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the reference layout; FIR kernels hold the real [1,3,3,1] filter."""
    gen = torch.Generator().manual_seed(seed)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = (torch.outer(taps, taps) / 16.0)[None, None]  # /64 * gain 4
    state = {}
    for key, shape in reference_shapes(layout, architecture).items():
        value = torch.randn(shape, generator=gen)
        if key.endswith("kernel"):
            value = kernel.clone()
        elif key.startswith("mapping") and "weight" in key:
            value = value * 100.0  # stored divided by the mapping's lr multiplier 0.01
        elif key.endswith(("bias", "noise_strength", "w_avg")):
            value = value * 0.1
        state[key] = value
    return state


def to_authors_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """genforce → authors' layout: TF-ordered conv weights, dense weights under ``fc``."""
    out = {}
    for key, value in state.items():
        if key.startswith("mapping.dense") and key.endswith(".weight") or ".style.weight" in key:
            out[key.replace(".weight", ".fc.weight")] = value
        elif key.startswith("synthesis.") and key.endswith(".weight"):
            out[key] = value.permute(2, 3, 1, 0).contiguous()
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def genforce_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sg2") / "stylegan2_genforce.pth"
    torch.save(
        {
            "generator": random_state("genforce", seed=1),
            "generator_smooth": random_state("genforce", seed=0),
            "discriminator": {"layer0.weight": torch.zeros(2)},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def genforce_model(genforce_ckpt: Path):
    return get_generator("stylegan2-genforce", checkpoint=str(genforce_ckpt))


def test_genforce_keys_layer_order_and_shapes(genforce_model, genforce_ckpt: Path) -> None:
    model = genforce_model
    expected = reference_shapes("genforce")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert model.name == "stylegan2-genforce"
    assert model.weights_sha256 == sha256_file(genforce_ckpt)
    assert model.resolution == 32 and model.arch.channels == (32, 32, 16, 8)
    assert list(model.arch.channels) == fmaps_channels(32, fmaps_base=256, fmaps_max=32)
    assert model.arch.architecture == "skip" and model.arch.mapping_layers == N_MAPPING
    assert model.layer_names == (
        "layer0_4x4",
        "layer1_8x8",
        "layer2_8x8",
        "layer3_16x16",
        "layer4_16x16",
        "layer5_32x32",
        "layer6_32x32",
    )
    out = model(model.sample_latents(2, seed=0))
    assert out.image.shape == (2, 3, 32, 32)
    assert [tuple(f.shape) for f in out.features] == [(2, *s) for s in LAYER_SHAPES]
    assert model.layer_shapes() == LAYER_SHAPES


# Produced once by genforce's own StyleGAN2Generator (resolution 32, z/w 16, 2 mapping layers
# of 24, fmaps_base 256, fmaps_max 32) after load_state_dict(random_state("genforce", seed=0))
# — which loads strictly, so the key table above is genforce's — on z from seed 11 with
# trunc_psi=0.5, trunc_layers=18; features read by forward hooks on synthesis.layer{i}.
REFERENCE_PIXEL = [[0.578177, -0.647711, -0.126356], [-0.020552, 0.149866, 0.109314]]
REFERENCE_IMAGE_MEAN = [-0.466943, -0.319055]
REFERENCE_FEATURES = {  # layer: (feature[:, 0, 1, 2], per-sample mean)
    0: ([2.178200, 2.715277], [0.341117, 0.317852]),
    3: ([-0.038982, 0.027190], [0.115541, 0.143873]),
    6: ([0.110523, -0.067814], [0.226930, 0.143424]),
}


def test_genforce_matches_reference_outputs(genforce_model) -> None:
    z = torch.randn(2, Z_DIM, generator=torch.Generator().manual_seed(11))
    model = genforce_model
    with torch.no_grad():
        out = model(model.latents.sample(z, model.mapping, model.truncation.w_avg))

    def close(actual: torch.Tensor, expected: list) -> None:
        torch.testing.assert_close(actual, torch.tensor(expected), atol=2e-5, rtol=1e-4)

    close(out.image[:, :, 16, 16], REFERENCE_PIXEL)
    close(out.image.mean(dim=(1, 2, 3)), REFERENCE_IMAGE_MEAN)
    for layer, (values, means) in REFERENCE_FEATURES.items():
        close(out.features[layer][:, 0, 1, 2], values)
        close(out.features[layer].mean(dim=(1, 2, 3)), means)


def test_genforce_prefers_generator_smooth_and_honours_checkpoint_key(
    genforce_model, genforce_ckpt: Path
) -> None:
    smooth, raw = random_state("genforce", seed=0), random_state("genforce", seed=1)
    key = "synthesis.layer3.weight"
    assert torch.equal(genforce_model.state_dict()[key], smooth[key])
    chosen = get_generator(
        "stylegan2-genforce", checkpoint=str(genforce_ckpt), checkpoint_key="generator"
    )
    assert torch.equal(chosen.state_dict()[key], raw[key])


def test_checkpoint_key_gives_the_weights_their_own_id(genforce_model, genforce_ckpt: Path) -> None:
    """``generator`` and ``generator_smooth`` of one file are different weights, so their
    feature stores must not share an id (the default keeps the plain file hash)."""
    chosen = get_generator(
        "stylegan2-genforce", checkpoint=str(genforce_ckpt), checkpoint_key="generator"
    )
    assert chosen.weights_sha256 != genforce_model.weights_sha256
    assert chosen.weights_sha256 == f"{sha256_file(genforce_ckpt)}:generator"


def test_genforce_runner_checkpoint_nests_models(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_iter010000.pth"
    state = random_state("genforce", seed=2)
    torch.save({"models": {"generator_smooth": state}, "running_metadata": {"iter": 10}}, path)
    model = get_generator("stylegan2-genforce", checkpoint=str(path))
    assert torch.equal(model.truncation.w_avg, state["truncation.w_avg"])


def test_authors_layout_matches_genforce_numerically(genforce_model, tmp_path: Path) -> None:
    """The same weights in both layouts give the same images and features."""
    authors = to_authors_layout(random_state("genforce", seed=0))
    assert {k: tuple(v.shape) for k, v in authors.items()} == reference_shapes("lineargan")
    authors["truncation.truncation"] = torch.full((1, 8, 1), 0.5)  # dropped by their converter
    path = tmp_path / "stylegan2_ffhq.pth"
    torch.save(authors, path)
    model = get_generator("stylegan2-lineargan", checkpoint=str(path))
    assert model.name == "stylegan2-lineargan" and model.layer_names == genforce_model.layer_names
    assert "synthesis.layer1.style.fc.weight" in model.state_dict()
    latents = genforce_model.sample_latents(3, seed=5)
    assert torch.equal(model.sample_latents(3, seed=5), latents)
    with torch.no_grad():
        ours, theirs = model(latents), genforce_model(latents)
    torch.testing.assert_close(ours.image, theirs.image)
    for a, b in zip(ours.features, theirs.features, strict=True):
        torch.testing.assert_close(a, b)


def test_origin_architecture_is_inferred(tmp_path: Path) -> None:
    path = tmp_path / "origin.pth"
    torch.save(random_state("lineargan", "origin"), path)
    model = get_generator("stylegan2-lineargan", checkpoint=str(path), latent_space="w")
    assert model.arch.architecture == "origin"
    assert not hasattr(model.synthesis, "output0") and hasattr(model.synthesis, "output3")
    out = model(model.sample_latents(2, seed=0))
    assert out.image.shape == (2, 3, 32, 32)
    assert [tuple(f.shape[1:]) for f in out.features] == LAYER_SHAPES


def test_batch_rows_are_independent(genforce_model) -> None:
    """The grouped (fused) modulated conv gives each sample its own styles."""
    latents = genforce_model.sample_latents(3, seed=1)
    with torch.no_grad():
        batch = genforce_model(latents)
        alone = genforce_model(latents[1:2])
    torch.testing.assert_close(batch.image[1:2], alone.image)
    torch.testing.assert_close(batch.features[-1][1:2], alone.features[-1])
    assert not torch.allclose(batch.image[0], batch.image[1])


@pytest.mark.parametrize(
    ("space", "dim"), [("z", Z_DIM), ("w", W_DIM), ("wp", 8 * W_DIM), ("trunc-wp", 8 * W_DIM)]
)
def test_latent_spaces_are_seeded_and_deterministic(genforce_ckpt: Path, space, dim) -> None:
    model = get_generator("stylegan2-genforce", checkpoint=str(genforce_ckpt), latent_space=space)
    assert model.latent_space == space and model.latent_dim == dim
    latents = model.sample_latents(5, seed=3, chunk_size=2)
    assert latents.shape == (5, dim)
    assert torch.equal(latents, model.sample_latents(5, seed=3, chunk_size=2))
    # same z stream for any chunking; the mapping's matmul may round differently per batch size
    torch.testing.assert_close(latents, model.sample_latents(5, seed=3, chunk_size=5))
    assert not torch.equal(latents, model.sample_latents(5, seed=4))
    if space == "z":  # the base class's stream: one seeded generator, chunk after chunk
        assert torch.equal(
            latents, torch.randn(5, Z_DIM, generator=torch.Generator().manual_seed(3))
        )
    with torch.no_grad():
        first, second = model(latents[:2]), model(latents[:2])
    assert torch.equal(first.image, second.image)
    assert all(torch.equal(a, b) for a, b in zip(first.features, second.features, strict=True))


def test_truncation_options_reach_the_latents(genforce_ckpt: Path) -> None:
    def latents(**options) -> torch.Tensor:
        model = get_generator("stylegan2-genforce", checkpoint=str(genforce_ckpt), **options)
        return model.sample_latents(4, seed=0).view(4, 8, W_DIM)

    plain = latents(latent_space="wp")
    w_avg = random_state("genforce", seed=0)["truncation.w_avg"]
    default = latents()  # the authors' psi 0.5 on 18 layers: every one of the 8 here
    torch.testing.assert_close(default, w_avg + 0.5 * (plain - w_avg))
    partial = latents(truncation=0.7, truncation_layers=2)
    torch.testing.assert_close(partial[:, :2], w_avg + 0.7 * (plain[:, :2] - w_avg))
    assert torch.equal(partial[:, 2:], plain[:, 2:])


def test_randomize_noise_changes_images_only_when_asked(genforce_ckpt: Path) -> None:
    model = get_generator("stylegan2-genforce", checkpoint=str(genforce_ckpt), randomize_noise=True)
    latents = model.sample_latents(1, seed=0)
    with torch.no_grad():
        assert not torch.equal(model(latents).image, model(latents).image)


def test_forward_features_subset_equals_full_forward(genforce_model) -> None:
    latents = genforce_model.sample_latents(2, seed=7)
    with torch.no_grad():
        full = genforce_model(latents).features
        subset = genforce_model.forward_features(latents, [4, 1])
        last = genforce_model.forward_features(latents, [-1])
        every = genforce_model.forward_features(latents)
    assert torch.equal(subset[0], full[4]) and torch.equal(subset[1], full[1])
    assert torch.equal(last[0], full[-1])
    assert len(every) == N_CONV and all(torch.equal(a, b) for a, b in zip(every, full, strict=True))
    with pytest.raises(IndexError):
        genforce_model.forward_features(latents, [N_CONV])


def test_renamed_key_fails_naming_it(tmp_path: Path) -> None:
    state = random_state("genforce")
    state["synthesis.layer3.style.w"] = state.pop("synthesis.layer3.style.weight")
    path = tmp_path / "renamed.pth"
    torch.save({"generator_smooth": state}, path)
    with pytest.raises(CheckpointError) as err:
        get_generator("stylegan2-genforce", checkpoint=str(path))
    message = str(err.value)
    assert "synthesis.layer3.style.weight" in message and "synthesis.layer3.style.w'" in message
    assert "\n" not in message and "Fix:" in message


def test_wrong_layout_and_unsupported_variants_are_explained(tmp_path: Path) -> None:
    authors = tmp_path / "authors.pth"
    torch.save(random_state("lineargan"), authors)
    with pytest.raises(CheckpointError, match="use generator stylegan2-lineargan"):
        get_generator("stylegan2-genforce", checkpoint=str(authors))
    genforce = tmp_path / "genforce.pth"
    torch.save(random_state("genforce"), genforce)
    with pytest.raises(CheckpointError, match="use generator stylegan2-genforce"):
        get_generator("stylegan2-lineargan", checkpoint=str(genforce))
    conditional = random_state("genforce")
    conditional["mapping.label_weight"] = torch.zeros(10, Z_DIM)
    torch.save(conditional, genforce)
    with pytest.raises(CheckpointError, match="label-conditional"):
        get_generator("stylegan2-genforce", checkpoint=str(genforce))
    with pytest.raises(CheckpointError, match="checkpoint"):
        get_generator("stylegan2-genforce")
    with pytest.raises(LinearGanError, match="unknown latent space"):
        get_generator("stylegan2-lineargan", checkpoint=str(authors), latent_space="s")

"""The real embedded models: the DigiFace DCGAN (weights hash-verified) and the dlib segmenter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineargan.cache import generate_and_label, to_uint8
from lineargan.errors import CheckpointError, UnknownNameError
from lineargan.models import get_generator, get_segmenter, list_generators, list_segmenters
from lineargan.models.dcgan_digiface import DIGIFACE_WEIGHTS, DCGANGenerator
from lineargan.models.weights import load_verified_state_dict, sha256_file

EXPECTED_SHAPES = [(512, 4, 4), (256, 8, 8), (128, 16, 16), (64, 32, 32)]


def assert_one_line_fix(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Fix:" in msg, msg
    return msg


# -- generator ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faces(generator):
    with torch.no_grad():
        return generator(generator.sample_latents(16, seed=0))


def test_registry_lists_builtin_models():
    assert "dcgan-digiface" in list_generators()
    assert "dlib-face68" in list_segmenters()


def test_unknown_model_names_raise_listing_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        get_generator("stylegan9")
    assert "dcgan-digiface" in assert_one_line_fix(err)
    with pytest.raises(UnknownNameError) as err:
        get_segmenter("nope")
    assert "dlib-face68" in assert_one_line_fix(err)


def test_generator_metadata_and_verified_weights(generator):
    assert generator.name == "dcgan-digiface"
    assert generator.latent_dim == 100 and generator.resolution == 64
    assert generator.weights_sha256 == DIGIFACE_WEIGHTS.sha256
    assert sha256_file(DIGIFACE_WEIGHTS.cached_path()) == DIGIFACE_WEIGHTS.sha256
    assert not generator.training


def test_latents_are_deterministic_given_seed(generator):
    a, b = generator.sample_latents(8, seed=3), generator.sample_latents(8, seed=3)
    assert a.shape == (8, 100) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, generator.sample_latents(8, seed=4))
    with torch.no_grad():
        assert torch.equal(generator(a).image, generator(b).image)


def test_feature_shapes(generator, faces):
    assert generator.layer_shapes() == EXPECTED_SHAPES
    assert [tuple(f.shape) for f in faces.features] == [(16, *s) for s in EXPECTED_SHAPES]
    assert len(generator.layer_names) == len(EXPECTED_SHAPES)
    for f in faces.features:  # post-ReLU activations, and not dead
        assert f.min() >= 0
        assert (f > 0).float().mean() > 0.05


def test_images_are_varied_and_not_degenerate(faces):
    img = faces.image
    assert img.shape == (16, 3, 64, 64)
    assert img.min() >= -1 and img.max() <= 1
    # every image has real contrast (a blank or collapsed generator has std ≈ 0)
    assert img.flatten(1).std(1).min() > 0.15
    # every pair of images differs clearly (no mode collapse onto one picture)
    diff = (img[:, None] - img[None]).abs().flatten(2).mean(2)
    off_diag = diff[~torch.eye(len(img), dtype=torch.bool)]
    assert off_diag.min() > 0.1
    # not saturated to ±1 (random weights or a wrong checkpoint saturate tanh)
    assert (img.abs() > 0.99).float().mean() < 0.1


def test_trained_weights_differ_from_random_init(generator, faces):
    random = get_generator("dcgan-random", seed=0)
    with torch.no_grad():
        img = random(generator.sample_latents(16, seed=0)).image
    assert not torch.allclose(img, faces.image, atol=0.1)


def test_to_uint8_maps_range():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4)
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 4, 3)
    assert out[0, 0, :, 0].tolist() == [0, 128, 255, 255]


def test_checkpoint_override_loads_same_weights(tmp_path, generator):
    path = tmp_path / "good.tar"
    torch.save({"netG_state_dict": generator.state_dict()}, path)
    other = get_generator("dcgan-digiface", checkpoint=path)
    assert other.weights_sha256 == sha256_file(path)
    z = generator.sample_latents(2, seed=0)
    with torch.no_grad():
        assert torch.equal(other(z).image, generator(z).image)


def test_checkpoint_with_wrong_hash_raises(tmp_path):
    path = tmp_path / "w.tar"
    torch.save({"netG_state_dict": DCGANGenerator().state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_verified_state_dict(path, sha256=DIGIFACE_WEIGHTS.sha256, key="netG_state_dict")
    msg = assert_one_line_fix(err)
    assert "sha256" in msg and DIGIFACE_WEIGHTS.sha256 in msg


def test_checkpoint_with_missing_key_raises(tmp_path):
    state = DCGANGenerator().state_dict()
    dropped = "main.1.weight"
    del state[dropped]
    path = tmp_path / "missing.tar"
    torch.save({"netG_state_dict": state}, path)
    with pytest.raises(CheckpointError) as err:
        get_generator("dcgan-digiface", checkpoint=path)
    msg = assert_one_line_fix(err)
    assert "missing" in msg and dropped in msg


def test_checkpoint_with_wrong_shape_raises(tmp_path):
    state = DCGANGenerator(ngf=32).state_dict()
    path = tmp_path / "small.tar"
    torch.save({"netG_state_dict": state}, path)
    with pytest.raises(CheckpointError) as err:
        get_generator("dcgan-digiface", checkpoint=path)
    assert "wrong shape" in assert_one_line_fix(err)


def test_checkpoint_without_state_dict_entry_or_not_torch_raises(tmp_path):
    path = tmp_path / "plain.tar"
    torch.save(DCGANGenerator().state_dict(), path)  # not under "netG_state_dict"
    with pytest.raises(CheckpointError) as err:
        get_generator("dcgan-digiface", checkpoint=path)
    assert "netG_state_dict" in assert_one_line_fix(err)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        get_generator("dcgan-digiface", checkpoint=junk)
    assert_one_line_fix(err)
    with pytest.raises(CheckpointError) as err:
        get_generator("dcgan-digiface", checkpoint=tmp_path / "absent.tar")
    assert_one_line_fix(err)


# -- segmenter ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(generator, segmenter):
    latents = generator.sample_latents(16, seed=0).numpy()
    return generate_and_label(generator, segmenter, latents, torch.device("cpu"))


def test_segmenter_classes(segmenter):
    names = segmenter.class_names
    assert names[0] == "background"
    assert {"eyes", "nose", "lips", "mouth"} <= set(names)
    assert len(segmenter.weights_sha256) == 64


def test_segmenter_output_types(labelled, segmenter):
    assert labelled.images.shape == (16, 64, 64, 3) and labelled.images.dtype == np.uint8
    assert labelled.labels.shape == (16, 64, 64) and labelled.labels.dtype == np.uint8
    assert labelled.labels.max() < len(segmenter.class_names)
    assert labelled.detected.shape == (16,) and labelled.detected.dtype == bool
    assert [f.dtype for f in labelled.features] == [np.float16] * 4


def test_segmenter_detects_generated_faces(labelled):
    # HOG fires on most DCGAN faces (the rest use the fallback box, reported per image)
    assert labelled.detected.mean() >= 0.6


def test_segmenter_does_not_detect_a_blank_image(segmenter):
    out = segmenter.segment(np.full((2, 64, 64, 3), 128, np.uint8))
    assert not out.detected.any()


def test_segmenter_rejects_wrong_input(segmenter):
    with pytest.raises(ValueError):
        segmenter.segment(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError):
        segmenter.segment(np.zeros((64, 64, 3), np.uint8))


def test_face_parts_present_and_in_anatomical_order(labelled, segmenter):
    names = segmenter.class_names
    eyes, nose, lips = names.index("eyes"), names.index("nose"), names.index("lips")
    labels = labelled.labels
    for c in (eyes, nose, lips):
        present = [(lab == c).any() for lab in labels]
        assert sum(present) >= 12, (names[c], sum(present))
    # background surrounds the face, skin covers a good part of the image
    skin = names.index("skin")
    assert (labels == 0).mean() > 0.1
    assert (labels == skin).mean() > 0.1

    def mean_row(lab: np.ndarray, c: int) -> float:
        rows = np.nonzero(lab == c)[0]
        return rows.mean() if rows.size else np.nan

    ordered = 0
    for lab in labels:
        e, n, m = mean_row(lab, eyes), mean_row(lab, nose), mean_row(lab, lips)
        ordered += bool(e < n < m)  # NaN compares False
    assert ordered >= 12
    # eyes are split left/right of the nose (two eye polygons)
    lab = labels[labelled.detected][0]
    eye_cols = np.nonzero(lab == eyes)[1]
    nose_col = np.nonzero(lab == nose)[1].mean()
    assert (eye_cols < nose_col).any() and (eye_cols > nose_col).any()


# -- the rasteriser ------------------------------------------------------------------------------


def _components(mask: np.ndarray) -> int:
    """4-connected components of a boolean map."""
    seen, n = np.zeros_like(mask, dtype=bool), 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        n, stack = n + 1, [start]
        seen[start] = True
        while stack:
            a, b = stack.pop()
            for x, y in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                if (
                    0 <= x < mask.shape[0]
                    and 0 <= y < mask.shape[1]
                    and mask[x, y]
                    and not seen[x, y]
                ):
                    seen[x, y] = True
                    stack.append((x, y))
    return n


def test_majority_downsample_known_answer_and_ties():
    from lineargan.models.dlib_face import majority_downsample

    fine = np.array(
        [
            [1, 1, 0, 0],
            [1, 0, 0, 3],  # block (0,1): 0,0,0,3 → 0
            [2, 2, 5, 4],  # block (1,0): 2,2,1,1 tie → 2 (the higher index)
            [1, 1, 4, 5],  # block (1,1): 5,4,4,5 tie → 5
        ],
        np.uint8,
    )
    out = majority_downsample(fine, 2, 6)
    np.testing.assert_array_equal(out, [[1, 0], [2, 5]])
    assert out.dtype == np.uint8
    with pytest.raises(ValueError, match="blocks"):
        majority_downsample(np.zeros((5, 4), np.uint8), 2, 2)


def test_majority_downsample_matches_a_per_block_count():
    """On random maps, every pixel is the class covering most of its block (brute force)."""
    from lineargan.models.dlib_face import majority_downsample

    rng = np.random.default_rng(0)
    fine = rng.choice(4, size=(6 * 8, 5 * 8), p=[0.4, 0.3, 0.2, 0.1]).astype(np.uint8)
    out = majority_downsample(fine, 8, 4)
    for i in range(6):
        for j in range(5):
            counts = np.bincount(fine[8 * i : 8 * i + 8, 8 * j : 8 * j + 8].ravel(), minlength=4)
            assert out[i, j] == np.flatnonzero(counts == counts.max()).max()


def test_real_faces_have_two_connected_eyebrows(labelled, segmenter):
    """The eyebrow band (5 % of the jaw width, ≈ 2 px) gives each detected face two whole
    eyebrows at 64 px; drawn 3 % wide they broke into 4 pieces per face on average."""
    eyebrows = segmenter.class_names.index("eyebrows")
    faces = labelled.labels[labelled.detected]
    counts = [_components(lab == eyebrows) for lab in faces]
    assert np.mean([c == 2 for c in counts]) >= 0.9, counts


def test_segmenter_identity_names_the_labelling_recipe(segmenter):
    """Labels depend on the landmark weights and on how they are rasterised: a store made by
    another recipe has another segmenter hash in its fingerprint and is refused."""
    from lineargan.models.dlib_face import RASTER_RECIPE, _landmark_model_path
    from lineargan.models.weights import sha256_file

    assert segmenter.weights_sha256 != sha256_file(_landmark_model_path())
    assert "majority" in RASTER_RECIPE

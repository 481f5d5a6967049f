"""Mask PNGs a person edits: the round trip and every malformed input as a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lineargan.errors import LinearGanError
from lineargan.figures import palette
from lineargan.masks import MaskInfo, load_mask_png, read_mask_info, save_mask_png

CLASSES = ("background", "skin", "eyebrows", "eyes", "nose", "lips", "mouth")
INFO = MaskInfo(CLASSES, "dcgan-digiface", "a" * 64)


def _labels(size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, len(CLASSES), (size, size)).astype(np.uint8)


def _palette_png(path, values: np.ndarray) -> None:
    """A palette PNG as a paint program writes it (a full 256-colour palette)."""
    image = Image.fromarray(values, mode="P")
    colours = np.full((256, 3), 200, np.uint8)
    colours[:7] = palette(7)
    image.putpalette(colours.ravel().tolist())
    image.save(path)


def test_round_trip_keeps_indices_and_identity(tmp_path):
    labels = _labels()
    path = save_mask_png(tmp_path / "m.mask.png", labels, INFO)
    with Image.open(path) as image:
        assert image.mode == "P"  # editable with the palette in any paint program
        assert np.array_equal(np.asarray(image.getpalette()[:21]).reshape(7, 3), palette(7))
    assert np.array_equal(load_mask_png(path, CLASSES, 16, INFO.generator_sha256), labels)
    assert read_mask_info(path) == INFO


def test_rgb_mask_with_exact_palette_colours_is_accepted(tmp_path):
    labels = _labels()
    Image.fromarray(palette(7)[labels]).save(tmp_path / "rgb.png")
    assert np.array_equal(load_mask_png(tmp_path / "rgb.png", CLASSES, 16), labels)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: save_mask_png(p, _labels(8), INFO), "is 8×8 px"),
        (lambda p: _palette_png(p, np.full((16, 16), 9, np.uint8)), "palette index 9"),
        (
            lambda p: Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(p),
            "is not a class colour",
        ),
        (
            lambda p: save_mask_png(p, _labels(), MaskInfo(CLASSES, "other", "b" * 64)),
            "another generator",
        ),
        (
            lambda p: save_mask_png(p, _labels(), MaskInfo(CLASSES[:3] + ("hat",) + CLASSES[4:])),
            "classes",
        ),
        (lambda p: p.write_bytes(b"not a png"), "not a readable PNG"),
    ],
)
def test_malformed_masks_are_one_line_errors(tmp_path, make, message):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(LinearGanError, match=message) as err:
        load_mask_png(path, CLASSES, 16, INFO.generator_sha256)
    assert "\n" not in str(err.value) and "Fix:" in str(err.value)


def test_missing_mask_file(tmp_path):
    with pytest.raises(LinearGanError, match="no mask file"):
        load_mask_png(tmp_path / "nope.png", CLASSES, 16)


def test_a_reordered_palette_is_read_by_colour(tmp_path):
    labels = _labels()
    # an editor that re-sorted the palette: index 6 - k now holds class k's colour
    remapped = (6 - labels).astype(np.uint8)
    image = Image.fromarray(remapped, mode="P")
    colours = np.zeros((256, 3), np.uint8)
    colours[:7] = palette(7)[::-1]
    image.putpalette(colours.ravel().tolist())
    image.save(tmp_path / "reordered.png")
    assert np.array_equal(load_mask_png(tmp_path / "reordered.png", CLASSES, 16), labels)

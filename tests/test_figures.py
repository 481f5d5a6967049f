"""Figures: the class palette, the Pillow grid, the matplotlib charts and how they are written.

No models or stores needed: every input is a small synthetic array, so these run in seconds.
"""

from __future__ import annotations

import gc
import io
import weakref

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from lineargan.figures import (
    _srgb_to_lab,
    colorize,
    comparison_grid,
    heatmap,
    layer_miou_plot,
    palette,
)
from storage.layout import write_figure

FACE = ["background", "skin", "nose", "eyebrows", "eyes", "lips", "mouth"]
ADE = [f"ade_class_{i}" for i in range(150)]


def _min_pairwise(points: np.ndarray) -> float:
    d = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


# ---- palette ---------------------------------------------------------------------------------


def test_palette_150_classes_pairwise_distinct_and_stable():
    colours = palette(150)
    assert colours.shape == (150, 3) and colours.dtype == np.uint8
    assert colours[0].tolist() == [0, 0, 0]  # background
    # Measured: RGB ≥ 23.3, CIELAB ΔE ≥ 17.8 (the old 20-colour table repeated: distance 0).
    assert _min_pairwise(colours.astype(np.float64)) > 20
    assert _min_pairwise(_srgb_to_lab(colours)) > 15
    # Deterministic, and a class keeps its colour whatever the class count.
    assert np.array_equal(colours, palette(150))
    assert np.array_equal(palette(7), colours[:7])
    assert np.array_equal(palette(300)[:150], colours)
    assert palette(0).shape == (0, 3)


def test_palette_is_a_copy():
    colours = palette(10)
    colours[:] = 7
    assert palette(10)[0].tolist() == [0, 0, 0]


def test_colorize_out_of_range_labels_do_not_crash_or_alias():
    labels = np.array([[0, 1, 6], [7, 255, -1]])
    rgb = colorize(labels, n_class=7)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    pal = palette(256)
    assert np.array_equal(rgb[0], pal[[0, 1, 6]])
    assert np.array_equal(rgb[1, 0], pal[7]) and np.array_equal(rgb[1, 1], pal[255])
    assert rgb[1, 2].tolist() == [0, 0, 0]  # negative: background
    assert not (rgb[1, :2, None, :] == pal[None, :7]).all(-1).any()  # no real class's colour
    assert np.array_equal(colorize(labels[:1]), rgb[:1])  # n_class=None: same colours


# ---- comparison grid (Pillow) ----------------------------------------------------------------


def _grid_inputs(n_class: int, present: list[int]):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    labels = rng.choice(np.asarray(present), size=(3, 16, 16))
    labels.flat[: len(present)] = present  # every listed class appears at least once
    return images, {"segmenter": labels, "linear": labels[::-1].copy()}


def test_comparison_grid_uses_palette_and_lists_only_present_classes():
    images, rows = _grid_inputs(150, [0, 3, 120, 149])
    grid = comparison_grid(images, rows, tuple(ADE), scale=2)
    images_all, rows_all = _grid_inputs(150, list(range(150)))
    many = comparison_grid(images_all, rows_all, tuple(ADE), scale=2)
    assert many.width == grid.width and many.height > grid.height + 20 * 18  # wrapped rows
    # The tile pixels of class 149 carry palette colour 149.
    tiles = np.asarray(grid)[: 3 * (16 * 2 + 2)]
    assert (tiles == palette(150)[149]).all(-1).any()
    # Labels beyond the class names still draw (legend says "class k").
    images, rows = _grid_inputs(7, [0, 1, 9])
    assert comparison_grid(images, rows, tuple(FACE)).mode == "RGB"


# ---- heatmap ---------------------------------------------------------------------------------


def _matrix(k: int, nan_rows: tuple[int, ...] = ()) -> np.ndarray:
    m = np.random.default_rng(1).uniform(-0.2, 0.8, (k, k))
    for r in nan_rows:
        m[r, :] = m[:, r] = np.nan
    return m


def test_heatmap_has_colorbar_names_axis_labels_and_values():
    fig = heatmap(_matrix(7), FACE, title="cosine similarity (smoke)")
    assert isinstance(fig, Figure)
    ax, cax = fig.axes
    assert ax.images[0].colorbar is not None and cax.get_ylabel() == "mean cosine"
    assert [t.get_text() for t in ax.get_xticklabels()] == FACE
    assert [t.get_text() for t in ax.get_yticklabels()] == FACE
    assert ax.get_xlabel() == "class B" and ax.get_ylabel() == "class A"
    assert ax.get_title() == "cosine similarity (smoke)"
    assert all(t.get_rotation() > 0 for t in ax.get_xticklabels())
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == 49 and f"{_matrix(7)[2, 3]:.3f}" in cells


def test_heatmap_nan_cells_are_grey_and_explained():
    fig = heatmap(_matrix(7, nan_rows=(6,)), FACE)
    ax = fig.axes[0]
    im = ax.images[0]
    data = im.get_array()
    assert data.mask[6].all() and data.mask[:, 6].all() and not data.mask[:6, :6].any()
    bad = im.get_cmap().get_bad()
    assert bad[0] == bad[1] == bad[2] and 0.5 < bad[0] < 1  # grey, not a viridis colour
    assert sum(t.get_text() == "–" for t in ax.texts) == 13
    (legend,) = fig.legends
    assert "empty pool" in legend.get_texts()[0].get_text()
    heatmap(np.full((3, 3), np.nan), FACE[:3])  # nothing finite: still draws


def test_heatmap_large_matrix_has_no_cell_values():
    names = ADE[:25]
    ax = heatmap(_matrix(25), names).axes[0]
    assert not ax.texts and [t.get_text() for t in ax.get_xticklabels()] == names


def test_heatmap_rejects_mismatched_names():
    with pytest.raises(ValueError, match="does not match"):
        heatmap(_matrix(4), FACE)


# ---- layer plot ------------------------------------------------------------------------------


def _summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer_index": [2, 0, 1, -1],
            "layer_name": ["block2_16x16", "block0_4x4", "block1_8x8", "all"],
            "layer_size": [16, 4, 8, 32],
            "miou": [0.6, 0.2, 0.45, 0.66],
        }
    )


def test_layer_miou_plot_has_layers_dashed_sum_and_labels():
    fig = layer_miou_plot(_summary(), "Layer-wise mIoU")
    (ax,) = fig.axes
    solid, dashed = ax.lines
    assert list(solid.get_ydata()) == pytest.approx([20, 45, 60])  # sorted by layer_index
    assert dashed.get_linestyle() == "--"
    assert list(dashed.get_ydata()) == pytest.approx([66, 66])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["0: block0_4x4 (4²)", "1: block1_8x8 (8²)", "2: block2_16x16 (16²)"]
    assert ax.get_ylabel() == "mIoU (%)" and ax.get_title() == "Layer-wise mIoU"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["single layer", "all layers (sum): 66.0"]
    assert ax.get_ylim()[1] > 66


def test_layer_miou_plot_without_sum_row():
    summary = _summary()
    (ax,) = layer_miou_plot(summary[summary.layer_index >= 0], "t").axes
    assert len(ax.lines) == 1


# ---- write_figure ----------------------------------------------------------------------------


def test_write_figure_matplotlib_writes_png_then_pdf(tmp_path):
    urls = write_figure(str(tmp_path), "cosine-smoke", heatmap(_matrix(7), FACE))
    png, pdf = tmp_path / "figures" / "cosine-smoke.png", tmp_path / "figures" / "cosine-smoke.pdf"
    assert urls == [str(png), str(pdf)]
    assert sorted(p.name for p in png.parent.iterdir()) == ["cosine-smoke.pdf", "cosine-smoke.png"]
    with Image.open(io.BytesIO(png.read_bytes())) as image:
        assert image.format == "PNG" and image.width > 600
    first = pdf.read_bytes()
    assert first.startswith(b"%PDF")
    write_figure(str(tmp_path), "cosine-smoke", heatmap(_matrix(7), FACE))
    assert pdf.read_bytes() == first  # no timestamp: a rerun rewrites the same file


def test_write_figure_pil_image_writes_only_png(tmp_path):
    image = Image.new("RGB", (40, 30), (31, 119, 180))
    urls = write_figure(str(tmp_path), "grid", image)
    assert urls == [str(tmp_path / "figures" / "grid.png")]
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["grid.png"]
    with Image.open(tmp_path / "figures" / "grid.png") as back:
        assert back.size == (40, 30) and back.getpixel((0, 0)) == (31, 119, 180)


def test_write_figure_rejects_other_objects(tmp_path):
    with pytest.raises(TypeError, match="PIL image or a matplotlib Figure"):
        write_figure(str(tmp_path), "x", np.zeros((4, 4, 3), np.uint8))


def test_write_figure_does_not_keep_figures_alive(tmp_path):
    fig = layer_miou_plot(_summary(), "t")
    ref = weakref.ref(fig)
    write_figure(str(tmp_path), "layer", fig)
    del fig
    gc.collect()
    assert ref() is None


def test_write_figure_closes_pyplot_figures(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    fig = plt.figure()
    fig.add_subplot().plot([0, 1], [0, 1])
    write_figure(str(tmp_path), "pyplot", fig)
    assert not plt.fignum_exists(fig.number)

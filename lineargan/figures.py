"""Figures: label-map grids in Pillow, charts and heatmaps in matplotlib.

Image grids are pixel data (label maps upscaled with nearest neighbour), so Pillow draws them
exactly and cheaply. Charts and heatmaps need axes, tick labels and a colour bar and must also
exist as vector PDF, so they are :class:`matplotlib.figure.Figure` objects built with the
object-oriented API on an Agg canvas: no pyplot global state (no figure registry to leak, safe
to build in several Dask worker threads at once). :func:`storage.layout.write_figure` saves
them.

The class palette (:func:`palette`) has to stay readable for ADE20K's 150 classes, where any
fixed 20-colour table would repeat colours and make different classes look identical.
"""

from __future__ import annotations

from functools import lru_cache

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image, ImageDraw

# Heatmaps with at most this many classes get their values printed in the cells; beyond it the
# numbers would be too small to read (the colour bar still gives the scale).
ANNOTATE_MAX_CLASSES = 20
_NAN_GREY = "0.78"  # NaN heatmap cells: a neutral grey that no viridis value takes


# --------------------------------------------------------------------------------------------
# palette
# --------------------------------------------------------------------------------------------


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0..255, any leading shape) to CIELAB (D65), where Euclidean distance (ΔE76)
    roughly tracks how different two colours look; RGB distance does not (it overrates
    differences among greens and dark colours)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    xyz = lin @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


_GRID_LEVELS = 32  # candidate colours: a 32³ lattice of the RGB cube (32,768 colours)


@lru_cache(maxsize=4)
def _palette_table(n: int) -> np.ndarray:
    """The first ``n`` palette colours (read-only; cached, since grids call it per figure).

    Index 0 is black (background), 1..10 matplotlib's ``tab10`` (the familiar qualitative
    colours, so small label sets such as the 7 face classes look conventional), then greedy
    farthest-point sampling in CIELAB over an RGB lattice: each new colour is the candidate
    farthest (ΔE) from every colour already taken and from white (the canvas behind the grids).
    Farthest-point sampling is a 2-approximation of the best possible minimum distance, and it
    is prefix-stable: class k gets the same colour whatever ``n`` is, so figures with different
    class counts agree. Measured minimum pairwise distances for 150 colours: ΔE ≈ 17.8,
    RGB ≈ 23 (tab20 as the start would cap both at its own light-blue pair, ΔE ≈ 16.6).
    """
    tab10 = np.asarray(matplotlib.colormaps["tab10"].colors, dtype=np.float64)
    fixed = np.vstack([[0.0, 0.0, 0.0], np.round(tab10 * 255)])
    levels = np.round(np.linspace(0, 255, _GRID_LEVELS))
    cand = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    cand_lab = _srgb_to_lab(cand)
    nearest = np.full(len(cand), np.inf)
    for rgb in [*fixed, np.array([255.0, 255.0, 255.0])]:
        nearest = np.minimum(nearest, np.linalg.norm(cand_lab - _srgb_to_lab(rgb), axis=-1))
    out = list(fixed[:n])
    while len(out) < n:
        if len(out) - len(fixed) >= len(cand):  # lattice exhausted: repeat rather than fail
            out.append(out[len(fixed) + (len(out) - len(fixed)) % len(cand)])
            continue
        i = int(np.argmax(nearest))  # first maximum: deterministic
        out.append(cand[i])
        nearest = np.minimum(nearest, np.linalg.norm(cand_lab - cand_lab[i], axis=-1))
    table = np.asarray(out, dtype=np.uint8).reshape(n, 3)
    table.flags.writeable = False
    return table


def palette(n_class: int) -> np.ndarray:
    """``(n_class, 3)`` uint8 RGB colours, one per class: index 0 (background) black, the rest
    pairwise distinct (≥ 150 classes: ADE20K) and identical for a class whatever ``n_class``.
    """
    if n_class < 0:
        raise ValueError(f"n_class must be >= 0, got {n_class}")
    # Compute a power-of-two prefix (at least 256) so growing class counts reuse the cache.
    size = max(256, 1 << max(n_class - 1, 0).bit_length())
    return _palette_table(size)[:n_class].copy()


def colorize(labels: np.ndarray, n_class: int | None = None) -> np.ndarray:
    """RGB image (``labels.shape + (3,)``, uint8) of a label map with :func:`palette` colours.

    Labels ≥ ``n_class`` (an ignore value such as 255, or a prediction from a larger label set)
    get the palette's next distinct colours instead of aliasing a real class; negative labels
    are drawn as background.
    """
    lab = np.asarray(labels).astype(np.int64, copy=False)
    top = int(lab.max()) + 1 if lab.size else 1
    colours = palette(max(n_class or 0, top, 1))
    return colours[np.clip(lab, 0, None)]


# --------------------------------------------------------------------------------------------
# image grid (Pillow)
# --------------------------------------------------------------------------------------------


def comparison_grid(
    images: np.ndarray,
    rows: dict[str, np.ndarray],
    class_names: tuple[str, ...],
    scale: int = 3,
) -> Image.Image:
    """Fig 3 layout: one column per sample; first row the image, then one row per label map
    (segmenter label, then each extractor's prediction), with a title column and a legend.

    The legend lists only the classes present in the shown label maps (with their index): with
    ADE20K's 150 classes a full legend would dwarf the grid, and a swatch for a class that does
    not appear explains nothing. Its entries wrap to the grid's width.
    """
    n, h, w, _ = images.shape
    n_class = len(class_names)
    tiles = [images] + [colorize(lab, n_class) for lab in rows.values()]
    titles = ["image"] + list(rows)
    label_w, pad = 90, 2
    cell_h, cell_w = h * scale + pad, w * scale + pad

    present = sorted(
        {int(k) for lab in rows.values() for k in np.unique(np.asarray(lab)) if k >= 0}
    )
    colours = colorize(np.asarray(present, dtype=np.int64), n_class) if present else []
    entries = [f"{k} {class_names[k] if k < n_class else f'class {k}'}" for k in present]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    swatch, row_h = 12, 18
    col_w = int(max((probe.textlength(t) for t in entries), default=0)) + swatch + 16
    # At least four legend columns (the canvas widens if the grid is narrower than that).
    width = max(label_w + n * cell_w, min(max(len(entries), 1), 4) * col_w + 8)
    n_cols = max(1, (width - 8) // col_w)
    heading_h = row_h
    legend_h = heading_h + row_h * (-(-len(entries) // n_cols)) + 6

    canvas = Image.new("RGB", (width, len(tiles) * cell_h + legend_h), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (title, block) in enumerate(zip(titles, tiles, strict=True)):
        draw.text((4, r * cell_h + cell_h // 2 - 6), title, fill="black")
        for c in range(n):
            tile = Image.fromarray(block[c]).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + c * cell_w, r * cell_h))
    y0 = len(tiles) * cell_h + 4
    known = sum(k < n_class for k in present)
    draw.text((4, y0), f"classes shown ({known} of {n_class}):", fill="black")
    y0 += heading_h
    for j, (text, rgb) in enumerate(zip(entries, colours, strict=True)):
        x, y = 4 + (j % n_cols) * col_w, y0 + (j // n_cols) * row_h
        draw.rectangle(
            [x, y, x + swatch, y + swatch], fill=tuple(int(v) for v in rgb), outline="black"
        )
        draw.text((x + swatch + 4, y), text, fill="black")
    return canvas


def tile_grid(
    rows: list[list[np.ndarray]],
    row_titles: list[str],
    col_titles: list[str],
    scale: int = 2,
) -> Image.Image:
    """RGB tiles (each (H, W, 3) uint8, any size per row) on a white canvas: a title column on
    the left, column titles on top, each tile enlarged ``scale``× by nearest neighbour
    (SCS: a target mask and its samples per row; SIE: original, masks and edits per row)."""
    if len(rows) != len(row_titles):
        raise ValueError(f"{len(rows)} rows but {len(row_titles)} row titles")
    pad, head = 4, 16 if col_titles else 0
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = int(max((probe.textlength(t) for t in row_titles), default=0)) + 2 * pad
    cell_h = max((t.shape[0] for r in rows for t in r), default=0) * scale + pad
    cell_w = max((t.shape[1] for r in rows for t in r), default=0) * scale + pad
    n_cols = max((len(r) for r in rows), default=0)
    canvas = Image.new("RGB", (label_w + n_cols * cell_w, head + len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(col_titles[:n_cols]):
        draw.text((label_w + c * cell_w, 2), title, fill="black")
    for r, (tiles, title) in enumerate(zip(rows, row_titles, strict=True)):
        y = head + r * cell_h
        draw.text((pad, y + cell_h // 2 - 6), title, fill="black")
        for c, tile in enumerate(tiles):
            size = (tile.shape[1] * scale, tile.shape[0] * scale)
            canvas.paste(
                Image.fromarray(tile).resize(size, Image.NEAREST), (label_w + c * cell_w, y)
            )
    return canvas


# --------------------------------------------------------------------------------------------
# charts (matplotlib, object-oriented API only)
# --------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure on an Agg canvas: garbage-collected like any object, and not shared
    with other threads (pyplot's current-figure state is global)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def heatmap(
    matrix: np.ndarray,
    names: list[str],
    title: str = "",
    *,
    value_label: str = "mean cosine",
    nan_label: str = "no value (empty pool)",
) -> Figure:
    """Class-by-class matrix (``matrix[a, b]``: row = class A, column = class B) as a heatmap
    with a colour bar, class names on both axes and, up to :data:`ANNOTATE_MAX_CLASSES`
    classes, the values printed in the cells. NaN cells are grey (outside the colour map) and
    named in a legend, so "not measured" never reads as a low value.
    """
    values = np.asarray(matrix, dtype=np.float64)
    k = len(names)
    if values.shape != (k, k):
        raise ValueError(f"matrix shape {values.shape} does not match {k} names")
    annotate = k <= ANNOTATE_MAX_CLASSES
    cell = 0.55 if annotate else 0.13  # inches per cell: room for "0.123" / for a 5 pt name
    tick_size = 8 if annotate else 5
    longest = max((len(str(n)) for n in names), default=4)
    margin = 1.5 + longest * tick_size / 72 * 0.6  # tick labels + axis label
    fig = _new_figure(k * cell + margin + 1.6, k * cell + margin + (0.9 if title else 0.5))
    ax = fig.add_subplot()

    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:  # a constant matrix: give the colour map a span so the bar is drawable
        lo, hi = lo - 0.5, hi + 0.5
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_NAN_GREY)
    im = ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest"
    )
    fig.colorbar(im, ax=ax, label=value_label, shrink=0.9 if annotate else 0.6)

    ticks = np.arange(k)
    ax.set_xticks(ticks, labels=list(names), fontsize=tick_size)
    ax.set_yticks(ticks, labels=list(names), fontsize=tick_size)
    if annotate:
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    else:
        ax.tick_params(axis="x", labelrotation=90)
    ax.set_xlabel("class B")
    ax.set_ylabel("class A")
    if title:
        ax.set_title(title)

    if annotate:
        for a in range(k):
            for b in range(k):
                v = values[a, b]
                if not np.isfinite(v):
                    ax.text(b, a, "–", ha="center", va="center", fontsize=8, color="black")
                    continue
                r, g, bl, _ = cmap(im.norm(v))
                dark = 0.299 * r + 0.587 * g + 0.114 * bl < 0.5
                colour = "white" if dark else "black"
                ax.text(b, a, f"{v:.3f}", ha="center", va="center", fontsize=7, color=colour)
    if not np.isfinite(values).all():
        fig.legend(
            handles=[Patch(facecolor=_NAN_GREY, edgecolor="black", label=nan_label)],
            loc="outside lower left",
            fontsize=8,
            frameon=False,
        )
    return fig


def layer_miou_plot(summary: pd.DataFrame, title: str) -> Figure:
    """mIoU (%) of each single-layer extractor by layer, with the full sum-of-layers model as a
    dashed horizontal line: whether one layer already carries the semantics (Fig 10 / Appx A).

    ``summary`` has columns layer_index (``-1`` = the sum, "all"), layer_name, layer_size
    (feature-map side) and miou (fraction); x ticks read "index: name (size²)".
    """
    layers = summary[summary.layer_index >= 0].sort_values("layer_index")
    full = summary[summary.layer_index < 0]["miou"]
    n = len(layers)
    fig = _new_figure(max(5.5, 1.0 + 0.75 * n), 4.2)
    ax = fig.add_subplot()

    xs = np.arange(n)
    ys = 100 * layers["miou"].to_numpy(dtype=np.float64)
    ax.plot(xs, ys, marker="o", color="tab:blue", label="single layer")
    for x, y in zip(xs, ys, strict=True):
        if np.isfinite(y):
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
    top = float(np.nanmax(ys)) if n and np.isfinite(ys).any() else 0.0
    if len(full):
        v = 100 * float(full.iloc[0])
        ax.axhline(v, linestyle="--", color="tab:red", label=f"all layers (sum): {v:.1f}")
        top = max(top, v) if np.isfinite(v) else top
    ax.set_ylim(0, max(10.0, 10.0 * np.ceil(top * 1.08 / 10)))

    ax.set_xticks(
        xs,
        labels=[
            f"{int(i)}: {name} ({int(size)}²)"
            for i, name, size in zip(
                layers["layer_index"], layers["layer_name"], layers["layer_size"], strict=True
            )
        ],
        fontsize=8,
    )
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    if n:
        ax.set_xlim(-0.5, n - 0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title)
    ax.grid(axis="y", color="0.9")
    ax.set_axisbelow(True)
    ax.legend(loc="lower right", fontsize=8)
    return fig


_EXTRACTOR_COLOURS = {"LSE": "tab:blue", "NSE-1": "tab:orange", "NSE-2": "tab:green"}
_METHOD_TITLES = {"schedule": "paper schedule (Appx D)", "converged": "converged fits"}


def _extractor_rank(extractor: str) -> tuple[int, str]:
    """Paper order (LSE, NSE-1, NSE-2), anything else after them."""
    order = list(_EXTRACTOR_COLOURS)
    return (order.index(extractor) if extractor in order else len(order), extractor)


def training_curves_plot(summary: pd.DataFrame, title: str) -> Figure:
    """Fig 8: mIoU (%) of each extractor against the training step (log scale), one panel per
    fit method (paper schedule, converged), one line per extractor through its snapshots, and
    the weights the fit returned as a star at its last step, joined by a dotted segment (a
    plateau-stopped fit returns its best held-out weights, not its last step's).

    ``summary`` has columns extractor, method, point ("snapshot" / "final"), iteration and
    miou (fraction).
    """
    methods = [m for m in _METHOD_TITLES if m in set(summary["method"])]
    methods += sorted(set(summary["method"]) - set(methods))
    fig = _new_figure(4.6 * max(len(methods), 1) + 0.4, 4.0)
    axes = fig.subplots(1, max(len(methods), 1), sharey=True, squeeze=False)[0]
    top = 10.0
    for ax, method in zip(axes, methods, strict=False):
        rows = summary[summary["method"] == method]
        for extractor in sorted(set(rows["extractor"]), key=_extractor_rank):
            colour = _EXTRACTOR_COLOURS.get(extractor, "tab:gray")
            fit = rows[rows["extractor"] == extractor]
            steps = fit[fit["point"] == "snapshot"].sort_values("iteration")
            ys = 100 * steps["miou"].to_numpy(dtype=np.float64)
            ax.plot(steps["iteration"], ys, marker="o", markersize=3, color=colour, label=extractor)
            final = fit[fit["point"] == "final"]
            for it, v in zip(final["iteration"], 100 * final["miou"], strict=True):
                if len(steps):  # dotted: from the last snapshot to what the fit returned
                    last = steps.iloc[-1]
                    ax.plot(
                        [last["iteration"], it],
                        [100 * last["miou"], v],
                        linestyle=":",
                        color=colour,
                    )
                ax.plot([it], [v], marker="*", markersize=11, color=colour, linestyle="none")
            values = np.concatenate([ys, 100 * final["miou"].to_numpy(dtype=np.float64)])
            if np.isfinite(values).any():
                top = max(top, float(np.nanmax(values)))
        ax.plot([], [], marker="*", markersize=9, color="0.4", linestyle="none", label="returned")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training step")
        ax.set_title(_METHOD_TITLES.get(method, method), fontsize=10)
        ax.grid(color="0.9")
        ax.set_axisbelow(True)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("mIoU (%)")
    axes[0].set_ylim(0, 10.0 * np.ceil(top * 1.08 / 10))
    fig.suptitle(title, fontsize=10)
    return fig

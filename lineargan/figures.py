"""PNG figures drawn with Pillow (no plotting stack needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

# A fixed palette: background black, then distinct colours (repeats after 20 classes).
PALETTE = np.array(
    [
        [0, 0, 0],
        [255, 204, 153],
        [128, 64, 0],
        [0, 90, 255],
        [0, 200, 0],
        [220, 20, 60],
        [255, 230, 0],
        [150, 0, 200],
        [0, 200, 200],
        [255, 128, 0],
        [128, 128, 128],
        [90, 160, 60],
        [200, 120, 200],
        [40, 40, 160],
        [160, 40, 40],
        [40, 160, 160],
        [240, 240, 240],
        [120, 80, 40],
        [255, 0, 255],
        [0, 128, 64],
    ],
    dtype=np.uint8,
)


def colorize(labels: np.ndarray) -> np.ndarray:
    return PALETTE[labels % len(PALETTE)]


def comparison_grid(
    images: np.ndarray,
    rows: dict[str, np.ndarray],
    class_names: tuple[str, ...],
    scale: int = 3,
) -> Image.Image:
    """Fig 3 layout: one column per sample; first row the image, then one row per label map
    (segmenter label, then each extractor's prediction), with a title column and a legend."""
    n, h, w, _ = images.shape
    tiles = [images] + [colorize(lab) for lab in rows.values()]
    titles = ["image"] + list(rows)
    label_w, pad = 90, 2
    cell_h, cell_w = h * scale + pad, w * scale + pad
    legend_h = 18 * ((len(class_names) + 3) // 4) + 6
    canvas = Image.new("RGB", (label_w + n * cell_w, len(tiles) * cell_h + legend_h), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (title, block) in enumerate(zip(titles, tiles, strict=True)):
        draw.text((4, r * cell_h + cell_h // 2 - 6), title, fill="black")
        for c in range(n):
            tile = Image.fromarray(block[c]).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + c * cell_w, r * cell_h))
    y0 = len(tiles) * cell_h + 4
    for k, name in enumerate(class_names):
        x, y = 4 + (k % 4) * 110, y0 + (k // 4) * 18
        draw.rectangle(
            [x, y, x + 12, y + 12],
            fill=tuple(int(v) for v in PALETTE[k % len(PALETTE)]),
            outline="black",
        )
        draw.text((x + 16, y), name, fill="black")
    return canvas


_ANCHORS = np.array(  # a viridis-like ramp, low → high
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def _color(t: float) -> tuple[int, int, int]:
    t = float(np.clip(t, 0.0, 1.0)) * (len(_ANCHORS) - 1)
    i = min(int(t), len(_ANCHORS) - 2)
    c = _ANCHORS[i] + (t - i) * (_ANCHORS[i + 1] - _ANCHORS[i])
    return tuple(int(round(v)) for v in c)


def heatmap(
    matrix: np.ndarray, names: list[str], title: str = "", cell: int = 56
) -> Image.Image:
    """Coloured cells with their values, class names on both axes (column names rotated)."""
    k = len(names)
    label_w = 8 + 6 * max((len(n) for n in names), default=4)
    top = label_w + (18 if title else 4)
    legend_h = 30
    canvas = Image.new("RGB", (label_w + k * cell + 8, top + k * cell + legend_h), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 4), title, fill="black")
    finite = matrix[np.isfinite(matrix)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    for b, name in enumerate(names):  # column labels, rotated 90°
        txt = Image.new("RGB", (label_w - 4, 12), "white")
        ImageDraw.Draw(txt).text((0, 0), name, fill="black")
        rot = txt.rotate(90, expand=True)
        canvas.paste(rot, (label_w + b * cell + cell // 2 - 6, top - rot.height - 2))
    for a, name in enumerate(names):
        y = top + a * cell
        draw.text((4, y + cell // 2 - 6), name, fill="black")
        for b in range(k):
            x, v = label_w + b * cell, matrix[a, b]
            box = [x, y, x + cell - 2, y + cell - 2]
            if not np.isfinite(v):
                draw.rectangle(box, fill=(220, 220, 220))
                draw.text((x + cell // 2 - 3, y + cell // 2 - 6), "-", fill="black")
                continue
            rgb = _color((v - lo) / span)
            draw.rectangle(box, fill=rgb, outline="black" if a == b else None)
            lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
            draw.text(
                (x + 6, y + cell // 2 - 6), f"{v:.3f}", fill="black" if lum > 128 else "white"
            )
    y0 = top + k * cell + 8
    for i in range(120):
        draw.line([(label_w + i, y0), (label_w + i, y0 + 12)], fill=_color(i / 119))
    draw.text((4, y0), f"{lo:.3f}", fill="black")
    draw.text((label_w + 126, y0), f"{hi:.3f}", fill="black")
    return canvas


def layer_miou_plot(summary: pd.DataFrame, title: str) -> Image.Image:
    """mIoU (%) by layer: points joined by lines, the full sum as a dashed horizontal line."""
    layers = summary[summary.layer_index >= 0].sort_values("layer_index")
    full = summary[summary.layer_index < 0]["miou"]
    w, h, left, right, top, bottom = 560, 360, 70, 20, 36, 70
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    values = [100 * v for v in layers["miou"].fillna(0)] + [100 * v for v in full.fillna(0)]
    y_max = max(10.0, 10.0 * -(-max(values + [0.0]) // 10))
    x0, x1, y0, y1 = left, w - right, h - bottom, top  # plot box (y grows downward)

    def ypix(v: float) -> float:
        return y0 - (y0 - y1) * v / y_max

    n = len(layers)
    xs = [x0 + (x1 - x0) * (k + 0.5) / max(n, 1) for k in range(n)]
    d.line([(x0, y1), (x0, y0), (x1, y0)], fill="black", width=1)
    for t in range(0, int(y_max) + 1, 10 if y_max <= 50 else 20):
        y = ypix(t)
        d.line([(x0 - 4, y), (x0, y)], fill="black")
        d.line([(x0 + 1, y), (x1, y)], fill=(225, 225, 225))
        d.text((x0 - 30, y - 6), f"{t:>3d}", fill="black")
    pts = [(x, ypix(100 * v)) for x, v in zip(xs, layers["miou"].fillna(0), strict=True)]
    if len(pts) > 1:
        d.line(pts, fill=(0, 90, 255), width=2)
    for (x, y), v, name in zip(pts, layers["miou"], layers["layer_name"], strict=True):
        d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(0, 90, 255), outline="black")
        d.text((x - 14, y - 18), f"{100 * v:.1f}", fill="black")
        d.line([(x, y0), (x, y0 + 4)], fill="black")
        d.text((x - 3 * len(name), y0 + 8), name, fill="black")
    if len(full):
        yf = ypix(100 * float(full.iloc[0]))
        for xa in range(int(x0), int(x1), 12):
            d.line([(xa, yf), (min(xa + 6, x1), yf)], fill=(220, 20, 60), width=2)
        d.text(
            (x1 - 120, yf - 16), f"all layers: {100 * float(full.iloc[0]):.1f}", fill=(220, 20, 60)
        )
    d.text(((x0 + x1) // 2 - 16, h - 30), "layer", fill="black")
    d.text((x0, 10), title, fill="black")
    label = Image.new("RGB", (80, 14), "white")
    ImageDraw.Draw(label).text((2, 1), "mIoU (%)", fill="black")
    img.paste(label.rotate(90, expand=True), (6, (y0 + y1) // 2 - 40))
    return img

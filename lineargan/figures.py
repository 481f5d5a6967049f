"""PNG figures drawn with Pillow (no plotting stack needed)."""

from __future__ import annotations

import numpy as np
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

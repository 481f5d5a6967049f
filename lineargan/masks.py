"""Semantic masks as editable palette PNGs, and the sidecar that ties a sample to its latent.

A mask is saved as an 8-bit palette ("P" mode) PNG: pixel value = class index, palette = the
classes' colours (:func:`lineargan.figures.palette`), so any paint program shows the classes in
colour and keeps the indices when the user paints with the palette's colours. The PNG's text
chunks record the class names, the resolution and the generator (name and weights hash), so a
mask drawn for one generator is refused by another. A mask saved as RGB by an editor that
dropped the palette is accepted when every pixel is exactly one of the palette's colours.

Every error a user can make with a mask file (not a PNG, wrong size, an unknown palette index or
colour, a mask for another generator or class list) is a one-line :class:`LinearGanError`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin, UnidentifiedImageError

from lineargan.errors import LinearGanError
from lineargan.figures import palette

_KEY = "lineargan"
# formats whose compression changes pixel values (JPEG; MPO is a multi-picture JPEG)
_LOSSY_FORMATS = ("JPEG", "MPO")
LEGEND_PNG = "legend.png"
LEGEND_JSON = "legend.json"


@dataclass(frozen=True)
class MaskInfo:
    """What a mask file says about itself (absent for a PNG from elsewhere)."""

    class_names: tuple[str, ...]
    generator: str = ""
    generator_sha256: str = ""


def save_mask_png(path: str | Path, labels: np.ndarray, info: MaskInfo) -> Path:
    """Write ``labels`` (H, W) of class indices as a palette PNG carrying ``info``."""
    data = mask_png_bytes(labels, info)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def mask_png_bytes(labels: np.ndarray, info: MaskInfo) -> bytes:
    """The palette PNG of ``labels`` (H, W) carrying ``info``, as bytes: what
    :func:`save_mask_png` writes, for writers that reach files through fsspec (exports)."""
    labels = np.asarray(labels)
    n_class = len(info.class_names)
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"a mask is one (H, W) label map, got shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= n_class:
        raise ValueError(f"labels must lie in [0, {n_class}), got {labels.min()}..{labels.max()}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    colours = np.zeros((256, 3), np.uint8)
    colours[:n_class] = palette(n_class)
    image.putpalette(colours.ravel().tolist())
    meta = PngImagePlugin.PngInfo()
    meta.add_text(
        _KEY,
        json.dumps(
            {
                "class_names": list(info.class_names),
                "generator": info.generator,
                "generator_sha256": info.generator_sha256,
            }
        ),
    )
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def legend_entries(class_names: tuple[str, ...] | list[str]) -> list[dict]:
    """Each class's palette index, name and colour (``rgb`` and ``hex``): what to paint with."""
    return [
        {
            "index": k,
            "name": name,
            "rgb": [int(c) for c in rgb],
            "hex": "#" + bytes(int(c) for c in rgb).hex(),
        }
        for k, (name, rgb) in enumerate(zip(class_names, palette(len(class_names)), strict=True))
    ]


def legend_text(class_names: tuple[str, ...] | list[str]) -> str:
    """The legend as lines ``index  colour  name`` (for ``--help`` and terminals)."""
    return "\n".join(
        f"{e['index']:>3}  {e['hex']}  {e['name']}" for e in legend_entries(class_names)
    )


def save_legend(directory: str | Path, class_names: tuple[str, ...] | list[str]) -> Path:
    """Write ``legend.png`` (a swatch per class, with index, colour and name) and
    ``legend.json`` beside a set of masks, so a person painting them knows which colour is
    which class without reading code. Returns the PNG's path."""
    entries = legend_entries(class_names)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    row, pad = 20, 4
    width = 110 + 7 * max(len(e["name"]) for e in entries)
    image = Image.new("RGB", (width, row * len(entries) + pad), "white")
    draw = ImageDraw.Draw(image)
    for k, e in enumerate(entries):
        y = pad + row * k
        draw.rectangle([pad, y, pad + row - 6, y + row - 6], fill=tuple(e["rgb"]), outline="grey")
        for x, text in (
            (row + pad, f"{e['index']:>3}"),
            (row + 30, e["hex"]),
            (row + 84, e["name"]),
        ):
            draw.text((x, y + 2), text, fill="black")
    image.save(directory / LEGEND_PNG)
    rows = ",\n  ".join(json.dumps(e) for e in entries)  # one class per line
    (directory / LEGEND_JSON).write_text(f'{{"classes": [\n  {rows}\n]}}\n')
    return directory / LEGEND_PNG


def read_mask_info(path: str | Path) -> MaskInfo | None:
    """The lineargan text chunk of a mask PNG (None for a PNG made elsewhere)."""
    with _open(path) as image:
        raw = image.info.get(_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return MaskInfo(
            tuple(data["class_names"]), data.get("generator", ""), data.get("generator_sha256", "")
        )
    except (ValueError, KeyError, TypeError):
        raise LinearGanError(
            f"{path} carries an unreadable lineargan text chunk",
            "save the mask again from a sample (lineargan-edit sample)",
        ) from None


def load_mask_png(
    path: str | Path,
    class_names: tuple[str, ...],
    resolution: int,
    generator_sha256: str | None = None,
) -> np.ndarray:
    """The (H, W) uint8 class indices of a mask PNG, checked against the model it is used
    with: its size, its classes and (when the file names one) its generator."""
    info = read_mask_info(path)
    if info is not None:
        if info.class_names != tuple(class_names):
            raise LinearGanError(
                f"{path} is a mask for classes {list(info.class_names)}, this model predicts "
                f"{list(class_names)}",
                "draw the mask on a mask PNG saved for this model (lineargan-edit sample)",
            )
        if generator_sha256 and info.generator_sha256 and info.generator_sha256 != generator_sha256:
            raise LinearGanError(
                f"{path} is a mask for another generator ({info.generator}, weights "
                f"{info.generator_sha256[:12]}…)",
                "use a mask saved for this generator, or the generator that mask was made for",
            )
    with _open(path) as image:
        if image.size != (resolution, resolution):
            raise LinearGanError(
                f"{path} is {image.size[0]}×{image.size[1]} px, the generator makes "
                f"{resolution}×{resolution} images",
                f"resize the mask to {resolution}×{resolution} with nearest-neighbour sampling",
            )
        if image.mode == "P" and _has_class_palette(image, len(class_names)):
            labels = np.array(image, dtype=np.uint8)
        elif image.mode == "P" or image.mode in (
            "RGB",
            "RGBA",
        ):  # an editor reordered the palette: read the colours instead
            labels = _from_colours(np.asarray(image.convert("RGB")), len(class_names), path)
        elif image.mode == "L":
            labels = np.array(image, dtype=np.uint8)
        else:
            raise LinearGanError(
                f"{path} has PNG mode {image.mode}",
                "save the mask as an indexed (palette) or RGB PNG",
            )
    bad = labels >= len(class_names)
    if bad.any():
        raise LinearGanError(
            f"{path} uses palette index {int(labels[bad].max())} at {int(bad.sum())} pixels; "
            f"the model has {len(class_names)} classes (0-{len(class_names) - 1})",
            "paint only with the palette's first colours: " + ", ".join(class_names),
        )
    return labels


def _has_class_palette(image: Image.Image, n_class: int) -> bool:
    """Whether a palette image's first ``n_class`` entries are the class colours (then the
    pixel values are the class indices)."""
    raw = image.getpalette() or []
    if len(raw) < 3 * n_class:
        return False
    return bool(np.array_equal(np.asarray(raw[: 3 * n_class]).reshape(-1, 3), palette(n_class)))


def _from_colours(rgb: np.ndarray, n_class: int, path) -> np.ndarray:
    colours = palette(n_class).astype(np.int64)
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    index = np.full(code.shape, -1, np.int64)
    for k, value in enumerate(table):
        index[code == value] = k
    unknown = index < 0
    if unknown.any():
        y, x = np.argwhere(unknown)[0]
        raise LinearGanError(
            f"{path} has {int(unknown.sum())} pixels whose colour {tuple(rgb[y, x])} (first at "
            f"x={x}, y={y}) is not a class colour",
            "paint with the palette's exact colours (no anti-aliasing or blur)",
        )
    return index.astype(np.uint8)


def _open(path: str | Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise LinearGanError(f"no mask file {path}", "check the path") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise LinearGanError(
            f"{path} is not a readable PNG ({exc})", "save the mask as PNG"
        ) from None
    if image.format in _LOSSY_FORMATS:
        image.close()
        raise LinearGanError(
            f"{path} is a {image.format} image: its lossy compression blends the class colours "
            "at every edge, so its pixels no longer match the palette",
            "save the mask as PNG (an indexed/palette PNG keeps the class indices exactly)",
        )
    return image

"""Semantic masks as editable palette PNGs, and the sidecar that ties a sample to its latent.

A mask is saved as an 8-bit palette ("P" mode) PNG: pixel value = class index, palette = the
classes' colours (:func:`lineargan.figures.palette`), so any paint program shows the classes in
colour and keeps the indices when the user paints with the palette's colours. The PNG's text
chunks record the class names, the resolution and the generator (name and weights hash), so a
mask drawn for one generator is refused by another. A mask saved as RGB by an editor that
dropped the palette is accepted when every pixel is exactly one of the palette's colours.

A folder of such masks (or of any single-channel label PNGs, with a :class:`ClassMap` from
their classes to the run's) can be SCS's targets instead of the reference's labels of held-out
images (:class:`TargetMasks`), as the paper's face protocol needs (100 human-annotated
CelebAMask-HQ masks).

Every error a user can make with a mask file (not a PNG, wrong size, an unknown palette index or
colour, a mask for another generator or class list) is a one-line :class:`LinearGanError`.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin, UnidentifiedImageError
from pydantic import Field, model_validator

from lineargan.config import Frozen
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


# -- a folder of target masks (SCS's targets from a user, e.g. the paper's CelebAMask-HQ) -------

# Files a folder of masks may hold besides the masks: the legend save_legend writes beside them.
_NOT_MASKS = (LEGEND_PNG, LEGEND_JSON)
# PNG modes with one integer per pixel (a palette index, a grey level, 1-bit, or 16-bit grey:
# the "I" modes), read as the class id.
_SINGLE_CHANNEL = ("P", "L", "1")


class ClassMap(Frozen):
    """How a folder's class ids become the run's classes.

    ``names``: the masks' class names by pixel value (a mask from elsewhere, e.g.
    CelebAMask-HQ's 19 classes); None: the masks know ids only. ``map``: a mask class (its name,
    or its pixel value written as text) → one of the run's class names, or null for
    background. A mask class that ``map`` does not name maps to the run's class of the same
    name when there is one, else to **background**: that is what the reference segmenter does
    with whatever it has no class for (dlib labels hair, neck and clothes background), and
    background counts in no agreement (Appx A), so an unmapped class neither helps nor hurts a
    predictor except through what the reference sees there, as with the default targets.
    """

    names: tuple[str, ...] | None = None
    map: dict[str, str | None] = Field(default_factory=dict)


class TargetMasks(Frozen):
    """A folder of target masks for SCS: single-channel PNGs (palette or grey; pixel value =
    class id), one target per file in file-name order, resized to the generator's resolution
    with nearest-neighbour sampling. ``classes``: how their ids become the run's classes (None:
    they are the run's own ids, as in masks saved by ``lineargan-edit`` or from a run's labels;
    a path: a JSON or YAML file holding a :class:`ClassMap`). ``digest``: sha256 of every file
    of the folder and of the class-map file, filled in when the parameters are made, so the
    analysis key changes whenever a mask does."""

    folder: str
    classes: ClassMap | str | None = None
    digest: str = ""

    @model_validator(mode="before")
    @classmethod
    def _digest_the_files(cls, data: Any) -> Any:
        """A bare folder path is ``{"folder": path}``; a missing digest is computed from the
        files, which are checked first (one-line errors before any work)."""
        if isinstance(data, str | Path):
            data = {"folder": str(data)}
        if isinstance(data, dict) and not data.get("digest") and "folder" in data:
            files = mask_files(data["folder"])
            extra = [Path(c) for c in [data.get("classes")] if isinstance(c, str | Path)]
            data = {**data, "folder": str(data["folder"]), "digest": files_digest(files + extra)}
        return data

    def class_map(self) -> ClassMap | None:
        """``classes`` read from its file when it names one."""
        if not isinstance(self.classes, str):
            return self.classes
        return read_class_map(self.classes)


def mask_files(folder: str | Path) -> list[Path]:
    """The mask files of ``folder`` in name order, each checked to be a readable single-channel
    square PNG (hidden files, sub-folders and a ``legend.png``/``legend.json`` are skipped)."""
    root = Path(folder)
    if not root.is_dir():
        raise LinearGanError(
            f"target mask folder {folder} does not exist or is not a folder",
            "pass a folder of single-channel PNG masks (target_masks)",
        )
    files = sorted(
        p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
        and p.name not in _NOT_MASKS
    )  # fmt: skip
    if not files:
        raise LinearGanError(
            f"target mask folder {folder} holds no mask files",
            "put the target masks (single-channel PNGs, one per target) in it",
        )
    for path in files:
        with _open(path) as image:
            if image.format != "PNG":
                raise LinearGanError(
                    f"{path} is a {image.format} image, not a PNG",
                    "save every target mask as a single-channel PNG (palette or grey)",
                )
            if image.mode not in _SINGLE_CHANNEL and not image.mode.startswith("I"):
                raise LinearGanError(
                    f"{path} has {len(image.getbands())} channel(s) (PNG mode {image.mode}); a "
                    "target mask has one: each pixel's value is its class id",
                    "save it as a palette or greyscale PNG of class ids (not a colour picture)",
                )
            if image.size[0] != image.size[1]:
                raise LinearGanError(
                    f"{path} is {image.size[0]}×{image.size[1]} px; resizing it to the "
                    "generator's square images would distort it",
                    "crop the mask to a square, as the generator's images are",
                )
    return files


def files_digest(files: list[Path]) -> str:
    """sha256 over each file's name and bytes, in order."""
    digest = hashlib.sha256()
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LinearGanError(f"cannot read {path} ({exc})", "check the path") from None
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def read_class_map(path: str | Path) -> ClassMap:
    """A :class:`ClassMap` from a JSON or YAML file (``{"names": [...], "map": {...}}``)."""
    import yaml  # a Prefect dependency, and YAML reads JSON too

    try:
        data = yaml.safe_load(Path(path).read_text())
        return ClassMap.model_validate(data)
    except OSError as exc:
        raise LinearGanError(f"cannot read class map {path} ({exc})", "check the path") from None
    except (yaml.YAMLError, ValueError) as exc:
        first = str(exc).splitlines()
        raise LinearGanError(
            f"class map {path} is not a valid class map ({' '.join(first[:3])})",
            'write {"names": [mask class names by pixel value], "map": {mask class: run class '
            "or null}} as JSON or YAML",
        ) from None


def class_lookup(classes: ClassMap | None, run_classes: tuple[str, ...]) -> np.ndarray:
    """(256,) int64: a mask's pixel value → the run's class id (-1: a value no class has).
    Refuses a map that names a class the masks or the run do not have."""
    lookup = np.full(256, -1, np.int64)
    if classes is None:
        lookup[: len(run_classes)] = np.arange(len(run_classes))
        return lookup
    names = classes.names
    ids = {name: k for k, name in enumerate(names or ())}
    for value, name in enumerate(names or range(256)):
        lookup[value] = run_classes.index(name) if name in run_classes else 0
    for key, run_class in classes.map.items():
        value = ids.get(key, int(key) if key.isdigit() and int(key) < 256 else None)
        if value is None or (names is not None and value >= len(names)):
            known = list(names) if names is not None else "pixel values 0-255"
            raise LinearGanError(
                f"the class map maps {key!r}, which is not a class of the masks ({known})",
                "map the masks' class names (names) or pixel values",
            )
        if run_class is not None and run_class not in run_classes:
            raise LinearGanError(
                f"the class map maps {key!r} to {run_class!r}, which is not a class of the "
                f"run's segmenter ({', '.join(run_classes)})",
                "map to one of the run's class names, or to null for background",
            )
        lookup[value] = 0 if run_class is None else run_classes.index(run_class)
    return lookup


def read_target_masks(
    masks: TargetMasks, run_classes: tuple[str, ...], resolution: int | None = None
) -> tuple[list[np.ndarray], list[str]]:
    """Every mask of the folder as the run's class ids, uint8 (resolution, resolution) each
    (``resolution`` None: at its own size), and the file names. Refuses a folder that changed since its digest was taken, a
    pixel value no class has, and a lineargan mask made for other classes."""
    files = mask_files(masks.folder)
    extra = [Path(masks.classes)] if isinstance(masks.classes, str) else []
    if files_digest(files + extra) != masks.digest:
        raise LinearGanError(
            f"the target masks in {masks.folder} changed after this run's parameters were made",
            "rerun, so the analysis key covers the masks it reads",
        )
    classes = masks.class_map()
    lookup = class_lookup(classes, tuple(run_classes))
    out = []
    for path in files:
        info = read_mask_info(path)
        if classes is None and info is not None and info.class_names != tuple(run_classes):
            raise LinearGanError(
                f"{path} is a mask for classes {list(info.class_names)}, the run's segmenter "
                f"has {list(run_classes)}",
                "give a class map (target_masks.classes) from the masks' classes to the run's",
            )
        with _open(path) as image:
            if resolution is not None and image.size != (resolution, resolution):
                image = image.resize((resolution, resolution), Image.Resampling.NEAREST)
            values = np.array(image).astype(np.int64)
        if values.max() > 255:
            raise LinearGanError(
                f"{path} has pixel value {int(values.max())}; class ids go up to 255",
                "save the mask with class ids 0-255 (an 8-bit palette or grey PNG)",
            )
        labels = lookup[values]
        if (labels < 0).any():
            bad = np.unique(values[labels < 0])
            raise LinearGanError(
                f"{path} has pixel value(s) {bad.tolist()[:5]}, which no class has (the run's "
                f"segmenter has {len(run_classes)} classes"
                + (f", the class map {len(classes.names)} names)" if classes and classes.names
                   else ")"),
                "give a class map (target_masks.classes) naming the masks' classes",
            )  # fmt: skip
        out.append(labels.astype(np.uint8))
    return out, [p.name for p in files]

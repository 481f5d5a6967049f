"""The on-disk layout of an exported labelled dataset (``python -m flows.export``).

::

    <root>/export.json                          what made it (fit, generator, classes, seed,
                                                shard size, confidence measure): written once
    <root>/classes.json                         each class's palette index, name and colour
    <root>/data/shard-<s>/images/<id>.png       RGB image, id = 8 digits
    <root>/data/shard-<s>/masks/<id>.png        palette PNG: pixel value = class index
    <root>/data/shard-<s>/latents.npy           (images in shard, latent_dim) float32, id order
    <root>/parts/shard-<s>.parquet              the shard's index rows: written last, its
                                                presence marks the shard finished
    <root>/metadata.parquet                     the index (every finished shard + ``kept``)
    <root>/README.md                            how to load it

``metadata.parquet`` is the dataset's index (``id, shard, latent_seed, file_name,
mask_file_name, area_<class>…, confidence[, uncertainty], kept``) and, by its name and its
``file_name`` / ``mask_file_name`` columns, the metadata file of a Hugging Face ``imagefolder``
dataset: ``datasets.load_dataset("imagefolder", data_dir=root)`` gives rows with an ``image``
and a ``mask`` (both PIL images) and every other column. Without this project:
``pd.read_parquet(root/"metadata.parquet")`` and ``PIL.Image.open(root/file_name)``.

A shard is written file by file, each atomically (:meth:`Target.write_bytes_atomic`), and its
part last: a killed export leaves finished shards (never rewritten by the rerun) and at most
some files of unfinished ones (rewritten whole). Every path goes through :class:`Target`, so
the same code writes to a local disk or an object store.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
from PIL import Image

from lineargan.errors import LinearGanError
from lineargan.masks import MaskInfo, legend_entries, mask_png_bytes
from storage.tables import parquet_bytes
from storage.target import Target

SPEC = "export.json"
CLASSES = "classes.json"
INDEX = "metadata.parquet"  # Hugging Face imagefolder's metadata file name
README = "README.md"
# What must match for a rerun to add to (or resume) an export instead of mixing two datasets:
# everything but N and the filter, which only change how many shards there are and the index.
IDENTITY = ("fit_key", "ensemble", "generator_sha256", "class_names", "seed", "shard_size")


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def image_name(image_id: int) -> str:
    return f"{image_id:08d}.png"


class ExportLayout:
    """Paths of one export root (local path or fsspec URL)."""

    def __init__(self, root: str) -> None:
        self.root = Target(root)

    def shard_dir(self, shard: int) -> Target:
        return self.root / "data" / shard_name(shard)

    def image_path(self, shard: int, image_id: int) -> str:
        """Relative to the root (the index's ``file_name``)."""
        return f"data/{shard_name(shard)}/images/{image_name(image_id)}"

    def mask_path(self, shard: int, image_id: int) -> str:
        return f"data/{shard_name(shard)}/masks/{image_name(image_id)}"

    def latents(self, shard: int) -> Target:
        return self.shard_dir(shard) / "latents.npy"

    def part(self, shard: int) -> Target:
        return self.root / "parts" / f"{shard_name(shard)}.parquet"

    def is_finished(self, shard: int) -> bool:
        return self.part(shard).exists()

    def finished_shards(self) -> set[int]:
        """The shards whose part exists (one listing, not one request per shard)."""
        parts = self.root / "parts"
        fs = parts.fs
        fs.invalidate_cache(parts.path)
        if not fs.exists(parts.path):
            return set()
        names = [p.rsplit("/", 1)[-1] for p in fs.ls(parts.path, detail=False)]
        return {
            int(n.removeprefix("shard-").removesuffix(".parquet"))
            for n in names
            if n.startswith("shard-") and n.endswith(".parquet")
        }


def check_same_export(root: str, spec: dict) -> None:
    """Refuse, in one line, a root that holds an export made with another fit, generator,
    seed or shard size (its shards would be mixed with this export's); nothing there, or the
    same export (to resume or extend), passes."""
    target = Target(root) / SPEC
    if not target.exists():
        return
    try:
        old = json.loads(target.read_bytes())
    except ValueError:
        old = {}
    differ = [k for k in IDENTITY if old.get(k) != spec.get(k)]
    if differ:
        raise LinearGanError(
            f"{Target(root).url} holds an export made with other {', '.join(differ)} "
            f"({', '.join(f'{k}={old.get(k)!r}' for k in differ)})",
            "pass another --out, or the same fit, seed and shard size to resume or extend it",
        )


def open_export(root: str, spec: dict) -> ExportLayout:
    """Create the export at ``root`` (``export.json`` and ``classes.json``), or reopen it when
    it was made by the same fit, generator, seed and shard size (:func:`check_same_export`)."""
    check_same_export(root, spec)
    layout = ExportLayout(root)
    target = layout.root / SPEC
    if target.exists():
        return layout
    entries = legend_entries(spec["class_names"])
    (layout.root / CLASSES).write_bytes_atomic(json.dumps({"classes": entries}, indent=1).encode())
    target.write_bytes_atomic(json.dumps(spec, indent=2, sort_keys=True).encode())
    return layout


def read_spec(root: str) -> dict:
    return json.loads((Target(root) / SPEC).read_bytes())


def png_bytes(image: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def remove_temporaries(layout: ExportLayout, shard: int) -> list[str]:
    """Delete the temporary files a writer of ``shard`` killed mid-file left behind
    (``Target.write_bytes_atomic`` writes ``<name>.tmp-<uuid>`` and renames it): the shard is
    being written again whole, and a dataset loader that lists the folder must not find them.
    Returns what was deleted (object stores write in one PUT and leave none)."""
    fs = layout.root.fs
    shard_dir, part = layout.shard_dir(shard).path, layout.part(shard).path
    fs.invalidate_cache(shard_dir)
    stale = [
        *(fs.glob(f"{shard_dir}/**/*.tmp-*") if fs.exists(shard_dir) else []),
        *fs.glob(f"{part}.tmp-*"),
    ]
    for path in stale:
        fs.rm_file(path)
    return stale


def write_shard(
    layout: ExportLayout,
    shard: int,
    rows: pd.DataFrame,
    images: np.ndarray,
    masks: np.ndarray,
    latents: np.ndarray,
    info: MaskInfo,
) -> str:
    """Write one shard: every image and mask PNG, the latents, then its part (``rows``, one
    per image in id order, with the file names added). Returns the part's URL."""
    remove_temporaries(layout, shard)
    rows = rows.copy()
    ids = rows["id"].to_numpy()
    rows.insert(3, "file_name", [layout.image_path(shard, int(i)) for i in ids])
    rows.insert(4, "mask_file_name", [layout.mask_path(shard, int(i)) for i in ids])
    for k, image_id in enumerate(ids):
        (layout.root / layout.image_path(shard, int(image_id))).write_bytes_atomic(
            png_bytes(images[k])
        )
        (layout.root / layout.mask_path(shard, int(image_id))).write_bytes_atomic(
            mask_png_bytes(masks[k], info)
        )
    buf = io.BytesIO()
    np.save(buf, latents.astype(np.float32))
    layout.latents(shard).write_bytes_atomic(buf.getvalue())
    part = layout.part(shard)
    part.write_bytes_atomic(parquet_bytes(rows))
    return part.url


def iter_parts(layout: ExportLayout, shards: list[int]) -> Iterator[pd.DataFrame]:
    """The parts of ``shards``, one frame at a time."""
    for shard in shards:
        yield pd.read_parquet(io.BytesIO(layout.part(shard).read_bytes()))


def write_index(layout: ExportLayout, index: pd.DataFrame, readme: str) -> str:
    """Write the index (``metadata.parquet``) and the README beside it; returns the index URL."""
    target = layout.root / INDEX
    target.write_bytes_atomic(parquet_bytes(index))
    (layout.root / README).write_bytes_atomic(readme.encode())
    return target.url


def read_index(root: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO((Target(root) / INDEX).read_bytes()))

"""The one place that knows where things live under the data and results roots.

::

    <data_root>/stores/<generator>__<segmenter>[__<options hash>]/<split>-seed<seed>-n<N>.zarr
    <results_root>/fits/<extractor>-<config hash>/{config.json, weights.safetensors}
    <results_root>/tables/<table>/<key>.parquet     (read a whole table with pd.read_parquet(dir))
    <results_root>/figures/<name>.png              (+ <name>.pdf, vector, for matplotlib charts)
    <results_root>/reports/<name>.md
    <results_root>/manifests/<analysis>-<key>.json   marks a finished analysis (written last)
    <results_root>/partial/<analysis>-<key>/<unit>.parquet   finished units of an unfinished
                                                     analysis (removed once it finishes)
"""

from __future__ import annotations

import io
import sys
from typing import TYPE_CHECKING

from storage.target import Target

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

    from lineargan.config import DatasetConfig

# Raster copy of a matplotlib chart: sharp on screen and in slides; the PDF is the print copy.
FIGURE_DPI = 150


def store_target(
    data_root: str,
    generator: str,
    segmenter: str,
    split: str,
    seed: int,
    n: int,
    variant: str = "",
) -> Target:
    """Where a dataset's store lives; ``variant`` (a hash of adapter options, "" for none)
    keeps stores of the same models under different options apart."""
    models = f"{generator}__{segmenter}" + (f"__{variant}" if variant else "")
    return Target(data_root) / "stores" / models / f"{split}-seed{seed}-n{n}.zarr"


def dataset_store(data_root: str, ds: DatasetConfig) -> Target:
    """The store of dataset ``ds``."""
    return store_target(
        data_root, ds.generator, ds.segmenter, ds.split, ds.seed, ds.n, ds.store_variant
    )


def fit_target(results_root: str, extractor: str, config_hash: str) -> Target:
    return Target(results_root) / "fits" / f"{extractor.lower()}-{config_hash[:16]}"


def table_dir(results_root: str, table: str) -> Target:
    return Target(results_root) / "tables" / table


def table_part(results_root: str, table: str, key: str) -> Target:
    return table_dir(results_root, table) / f"{key}.parquet"


def figure_target(results_root: str, name: str, ext: str = "png") -> Target:
    return Target(results_root) / "figures" / f"{name}.{ext}"


def write_figure(results_root: str, name: str, figure: Image.Image | Figure) -> list[str]:
    """Save figure ``name``; returns the URLs written, PNG first.

    A Pillow image (pixel grids) is written as ``<name>.png`` only. A matplotlib figure (charts,
    heatmaps) is written as ``<name>.png`` at :data:`FIGURE_DPI` and as a vector ``<name>.pdf``
    whose bytes do not depend on the clock (no creation date), so a rerun rewrites identical
    files. Each file is written atomically (a killed run never leaves half a file).

    Memory: figures from :mod:`lineargan.figures` are pyplot-free and freed with their last
    reference. A figure that was made with pyplot would stay in pyplot's global registry
    forever, so it is closed here once saved (pyplot is only consulted if already imported).
    """
    from PIL import Image as PILImage

    if isinstance(figure, PILImage.Image):
        buf = io.BytesIO()
        figure.save(buf, format="PNG")
        target = figure_target(results_root, name, "png")
        target.write_bytes_atomic(buf.getvalue())
        return [target.url]

    from matplotlib.figure import Figure

    if not isinstance(figure, Figure):
        raise TypeError(f"write_figure needs a PIL image or a matplotlib Figure, got {figure!r}")
    urls = []
    for ext, options in (
        ("png", {"dpi": FIGURE_DPI}),
        ("pdf", {"metadata": {"CreationDate": None, "ModDate": None}}),
    ):
        buf = io.BytesIO()
        figure.savefig(buf, format=ext, **options)
        target = figure_target(results_root, name, ext)
        target.write_bytes_atomic(buf.getvalue())
        urls.append(target.url)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(figure)  # no-op unless the figure is in pyplot's registry
    return urls


def report_target(results_root: str, name: str) -> Target:
    return Target(results_root) / "reports" / f"{name}.md"


def manifest_target(results_root: str, name: str) -> Target:
    """The JSON whose presence marks a finished analysis (written last)."""
    return Target(results_root) / "manifests" / f"{name}.json"


def partial_target(results_root: str, work: str, unit: str | None = None) -> Target:
    """Where a long analysis keeps its finished units until it finishes (``unit`` None: the
    directory of ``work``)."""
    target = Target(results_root) / "partial" / work
    return target if unit is None else target / f"{unit}.parquet"

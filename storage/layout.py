"""The one place that knows where things live under the data and results roots.

::

    <data_root>/stores/<generator>__<segmenter>/<split>-seed<seed>-n<N>.zarr
    <results_root>/fits/<extractor>-<config hash>/{config.json, weights.safetensors}
    <results_root>/tables/<table>/<key>.parquet     (read a whole table with pd.read_parquet(dir))
    <results_root>/figures/<name>.png
    <results_root>/reports/<name>.md
    <results_root>/manifests/<analysis>-<key>.json   marks a finished analysis (written last)
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from storage.target import Target

if TYPE_CHECKING:
    from PIL import Image


def store_target(
    data_root: str, generator: str, segmenter: str, split: str, seed: int, n: int
) -> Target:
    return (
        Target(data_root) / "stores" / f"{generator}__{segmenter}" / f"{split}-seed{seed}-n{n}.zarr"
    )


def fit_target(results_root: str, extractor: str, config_hash: str) -> Target:
    return Target(results_root) / "fits" / f"{extractor.lower()}-{config_hash[:16]}"


def table_dir(results_root: str, table: str) -> Target:
    return Target(results_root) / "tables" / table


def table_part(results_root: str, table: str, key: str) -> Target:
    return table_dir(results_root, table) / f"{key}.parquet"


def figure_target(results_root: str, name: str) -> Target:
    return Target(results_root) / "figures" / f"{name}.png"


def write_figure(results_root: str, name: str, image: Image.Image) -> str:
    """Save ``image`` as figure ``name`` (PNG, atomic: a killed run never leaves half a file);
    returns its URL."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    target = figure_target(results_root, name)
    target.write_bytes_atomic(buf.getvalue())
    return target.url


def report_target(results_root: str, name: str) -> Target:
    return Target(results_root) / "reports" / f"{name}.md"


def manifest_target(results_root: str, name: str) -> Target:
    """The JSON whose presence marks a finished analysis (written last)."""
    return Target(results_root) / "manifests" / f"{name}.json"

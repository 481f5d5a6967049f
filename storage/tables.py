"""Parquet result tables.

A table is a directory of Parquet files, one per unit of work (keyed by its configuration
hash), each written atomically. ``pd.read_parquet(<results_root>/tables/<table>)`` reads the
whole table; rewriting a unit replaces its file instead of duplicating rows.

Schemas (every table also carries the run metadata columns ``profile``, ``run_id``,
``code_version`` and ``created_at``):

- ``iou_per_class``: generator, segmenter, extractor, fit_key, class_index, class_name, iou
  (fraction, NaN where the class never counted), images (images in which the class counted).
- ``table1``: generator, segmenter, extractor, fit_key, miou, rel_diff (relative difference to
  the best extractor of the same generator/segmenter/profile, (y - y*) / y*), n_train, n_eval,
  iterations, train_seconds, fallback_rate_train, fallback_rate_eval.

Every analysis declares its tables with pyarrow schemas (``TABLES`` in its pipeline module,
``tasks/analyses/<analysis>.py``, listed by the analysis registry); a part whose columns differ
from its schema is refused instead of written. ``results_index`` (``tasks/index.py``) lists
every file of every run.
"""

from __future__ import annotations

import difflib
import io
import posixpath
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lineargan import __version__
from lineargan.errors import LinearGanError
from storage.layout import partial_target, table_dir, table_part
from storage.target import Target

RUN_METADATA = {
    "profile": pa.string(),
    "run_id": pa.string(),
    "code_version": pa.string(),
    "created_at": pa.string(),
}


# Column groups many tables share: which models made the rows, and per-class IoU (Appx A).
MODELS = {"generator": pa.string(), "segmenter": pa.string()}
CLASS_IOU = {
    "class_index": pa.int64(),
    "class_name": pa.string(),
    "iou": pa.float64(),
    "images": pa.int64(),
}


def schema(**columns: pa.DataType) -> pa.Schema:
    """A table's schema: its own columns, then the run metadata every row carries."""
    return pa.schema(list(columns.items()) + list(RUN_METADATA.items()))


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as one Parquet file's bytes (no index column): what every atomic table write
    hands to :meth:`~storage.target.Target.write_bytes_atomic`."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def run_metadata(profile: str, run_id: str) -> dict:
    return {
        "profile": profile,
        "run_id": run_id,
        "code_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_table_part(
    results_root: str, table: str, key: str, df: pd.DataFrame, schema: pa.Schema | None = None
) -> str:
    """Write one unit's rows of ``table`` atomically (cast to ``schema`` when given: a column
    missing from or unknown to the schema is an error, not a silent change of the table's
    shape); returns the file URL."""
    target = table_part(results_root, table, key)
    if schema is None:
        target.write_bytes_atomic(parquet_bytes(df))
        return target.url
    extra = sorted(set(df.columns) - set(schema.names))
    missing = sorted(set(schema.names) - set(df.columns))
    if extra or missing:
        raise ValueError(f"table {table!r}: columns {extra} not in its schema, {missing} missing")
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), buf)
    target.write_bytes_atomic(buf.getvalue())
    return target.url


class TableNotFoundError(LinearGanError, FileNotFoundError):
    """A table that is not under the results root (also a FileNotFoundError: no file to read)."""


def table_names(results_root: str) -> list[str]:
    """The tables under ``results_root`` (their directories; a table being written counts)."""
    tables = Target(results_root) / "tables"
    if not tables.exists():
        return []
    entries = tables.fs.ls(tables.path, detail=True)
    return sorted(
        posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory"
    )


def read_table(results_root: str, table: str) -> pd.DataFrame:
    """The whole table as a DataFrame (all units, all runs)."""
    target = table_dir(results_root, table)
    if not target.exists():
        known = table_names(results_root)
        if not known:
            raise TableNotFoundError(
                f"no result tables under {results_root} yet",
                "run the reproduce flow first (bash scripts/run.sh or python -m flows.reproduce), "
                "or pass the results root it wrote to",
            )
        close = difflib.get_close_matches(table, known, n=1)
        raise TableNotFoundError(
            f"no table {table!r} under {results_root}"
            + (f" (did you mean {close[0]!r}?)" if close else ""),
            f"use one of: {', '.join(known)}",
        )
    if not _part_paths(target):
        raise TableNotFoundError(
            f"table {table!r} under {results_root} has no parts yet",
            "wait until the run writing it finishes a unit of work",
        )
    return read_table_url(target.url)


def _part_paths(target: Target) -> list[str]:
    if target.path.endswith(".parquet"):
        return [target.path]
    fs = target.fs
    fs.invalidate_cache(target.path)  # parts written by other processes since the last listing
    return sorted(p for p in fs.ls(target.path, detail=False) if p.endswith(".parquet"))


def read_table_url(url: str) -> pd.DataFrame:
    """A whole table directory (or one part) given by URL, as the results index records it."""
    target = Target(url)
    frames = []
    for path in _part_paths(target):
        with target.fs.open(path, "rb") as fh:
            frames.append(pd.read_parquet(fh))
    return pd.concat(frames, ignore_index=True)


def read_table_part(results_root: str, table: str, key: str) -> pd.DataFrame | None:
    target = table_part(results_root, table, key)
    if not target.exists():
        return None
    return pd.read_parquet(io.BytesIO(target.read_bytes()))


class PartialUnits:
    """Finished units (rows of one DataFrame each) of an analysis that runs for hours, so a
    killed run resumes after the last finished unit instead of starting over. Each unit is one
    atomically written Parquet file; :meth:`clear` removes them once the analysis's own tables
    are written."""

    def __init__(self, results_root: str, work: str) -> None:
        self.results_root = results_root
        self.work = work

    def load(self, unit: str) -> pd.DataFrame | None:
        target = partial_target(self.results_root, self.work, unit)
        return pd.read_parquet(io.BytesIO(target.read_bytes())) if target.exists() else None

    def save(self, unit: str, df: pd.DataFrame) -> None:
        partial_target(self.results_root, self.work, unit).write_bytes_atomic(parquet_bytes(df))

    def load_or_compute(
        self, unit: str, compute: Callable[[], pd.DataFrame]
    ) -> tuple[pd.DataFrame, float | None]:
        """The unit's rows, computed and saved unless a previous run finished them; and the
        seconds computing took (None: reused)."""
        rows = self.load(unit)
        if rows is not None:
            return rows, None
        start = time.perf_counter()
        rows = compute()
        self.save(unit, rows)
        return rows, time.perf_counter() - start

    def clear(self) -> None:
        partial_target(self.results_root, self.work).remove_tree()

"""Paper-style tables rendered from result DataFrames, no I/O: the cell and grid helpers
every analysis's renderer (``tasks/analyses/<name>/render.py``) uses.

Each renderer takes the tables one analysis wrote (name -> DataFrame, as read back from
Parquet) and returns markdown. The run's report, its Prefect artifacts and ``lineargan render``
all call these same functions, so the numbers a run prints and the numbers rendered later from
Parquet cannot disagree. Markdown grids come from ``DataFrame.to_markdown``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

EXTRACTOR_ORDER = ["LSE", "NSE-1", "NSE-2"]
Tables = Mapping[str, pd.DataFrame]


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage cell; "–" for a value that was never measured."""
    return "–" if x is None or pd.isna(x) else f"{100 * x:.{digits}f}"


def signed_pct(x: float) -> str:
    """A difference in percentage points with its sign (+2.1, -0.4)."""
    return f"{100 * x:+.1f}"


def interval(lo: float, hi: float, signed: bool = False) -> str:
    """A confidence interval in percent, "[35.0, 39.2]" (signed points for a difference), so
    every table prints intervals the same way."""
    fmt = signed_pct if signed else pct
    return f"[{fmt(lo)}, {fmt(hi)}]"


def with_interval(value: float, lo: float, hi: float, signed: bool = False) -> str:
    """ "37.1 [35.0, 39.2]" in percent; "–" for a value that was never measured."""
    if pd.isna(value):
        return "–"
    return f"{signed_pct(value) if signed else pct(value)} {interval(lo, hi, signed)}"


def markdown_grid(df: pd.DataFrame, index_name: str | None = None) -> str:
    """``df`` as a GitHub markdown table (index as the first column), strings kept as is."""
    out = df.copy()
    if index_name is not None:
        out.index.name = index_name
    return out.to_markdown(tablefmt="github", disable_numparse=True)


def extractor_order(extractors) -> list[str]:
    order = {e: i for i, e in enumerate(EXTRACTOR_ORDER)}
    return sorted(dict.fromkeys(extractors), key=lambda e: order.get(e, len(order)))


def miou_from_rows(iou: pd.DataFrame) -> float:
    """mIoU of one fit's per-class rows: mean over the classes that counted (Appx A)."""
    return float(iou.loc[iou["images"] > 0, "iou"].mean())


# -- fits: methods and row labels ---------------------------------------------------------------


METHOD_ORDER = ["schedule", "converged"]
METHOD_LABELS = {"schedule": "paper schedule", "converged": "converged"}


def with_method(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``method`` column (rows written before fits had methods: the schedule)."""
    if "method" in df:
        return df.assign(method=df["method"].fillna("schedule"))
    return df.assign(method="schedule")


def row_label(extractor: str, method: str) -> str:
    """A table row: "LSE (converged)", "NSE-2 (paper schedule)"."""
    return f"{extractor} ({METHOD_LABELS.get(method, method)})"


def sort_fits(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rows in paper order: method (schedule first), then extractor (LSE, NSE-1, NSE-2)."""
    order = {name: i for i, name in enumerate(EXTRACTOR_ORDER)}
    methods = {name: i for i, name in enumerate(METHOD_ORDER)}

    def key(s: pd.Series) -> pd.Series:
        if s.name == "extractor":
            return s.map(order)
        return s.map(methods) if s.name == "method" else s

    return df.sort_values(by, key=key).reset_index(drop=True)


def miou_cell(miou: float, rel: float) -> str:
    if pd.isna(miou):
        return "–"
    return f"**{pct(miou)}**" if rel == 0 else f"{pct(miou)} ({100 * rel:+.1f}%)"


def per_class_grid(iou: pd.DataFrame, row: str, value: str = "iou") -> pd.DataFrame:
    """Per-class IoU (%) with ``row`` values as rows and classes (segmenter order) as columns."""
    wide = iou.pivot_table(index=row, columns="class_index", values=value, sort=True) * 100
    names = iou.drop_duplicates("class_index").set_index("class_index")["class_name"]
    wide.columns = [names[c] for c in wide.columns]
    return wide.map(lambda v: "–" if pd.isna(v) else f"{v:.1f}")


def has_values(df: pd.DataFrame, column: str) -> bool:
    """Whether ``df`` has ``column`` with a value (parts written before it existed have none)."""
    return column in df and bool(df[column].notna().any())


def predictor_label(predictor: str, n_shot) -> str:
    return f"{int(n_shot)}-shot LSE" if predictor == "LSE" and not pd.isna(n_shot) else predictor

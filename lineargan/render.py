"""Paper-style tables rendered from result DataFrames, no I/O: Tables 1 and 6, and the cell and
grid helpers every analysis's renderer (``tasks/analyses/<name>/render.py``) uses.

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


# -- Table 1 and Table 6 -----------------------------------------------------------------------


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


def table1_summary(iou: pd.DataFrame) -> pd.DataFrame:
    """mIoU per (generator, segmenter, method, extractor) and the difference to the best.

    ``rel_diff`` is Appx D's (y_i − y*) / y* with y* the best mIoU of the same model pair
    under the same fit method (the paper's schedule and converged fits are separate rows).
    """
    counted = with_method(iou[iou["images"] > 0])
    group = ["generator", "segmenter", "method", "extractor", "fit_key"]
    summary = counted.groupby(group, as_index=False)["iou"].mean().rename(columns={"iou": "miou"})
    best = summary.groupby(["generator", "segmenter", "method"])["miou"].transform("max")
    summary["rel_diff"] = (summary["miou"] - best) / best
    return sort_fits(summary, ["generator", "segmenter", "method", "extractor"])


def miou_cell(miou: float, rel: float) -> str:
    if pd.isna(miou):
        return "–"
    return f"**{pct(miou)}**" if rel == 0 else f"{pct(miou)} ({100 * rel:+.1f}%)"


def render_table1(tables: Tables) -> str:
    """Table 1: one row per (extractor, fit method), one column per model pair; the best of
    each method in bold, the others with their difference relative to it, all in percent."""
    summary = sort_fits(with_method(tables["table1"]), ["method", "extractor"])
    grid = _table1_grid(summary, "miou")
    first = summary.iloc[0]
    notes = (
        "Best of each fit method in bold; brackets: difference relative to it (Appx D). "
        "Paper schedule: Adam, Appx D's 50 epochs; converged: the LSE by L-BFGS to a certified "
        "optimum, the NSEs until their held-out loss stops improving (final loss: training "
        "loss for the LSE, held-out loss for the NSEs). "
        f"Training images: {int(first['n_train'])}, evaluation images: {int(first['n_eval'])}"
    )
    if "fallback_rate_train" in summary and not pd.isna(first["fallback_rate_train"]):
        notes += (
            f"; segmenter fallback rate (train/eval): {pct(first['fallback_rate_train'])}% / "
            f"{pct(first['fallback_rate_eval'])}%"
        )
    out = markdown_grid(grid, "extractor") + f"\n\n{notes}." + _certificates(summary)
    if has_values(summary, "miou_detected"):
        out += (
            f"\n\n### On the {int(first['n_eval_detected'])} evaluation images where the "
            "segmenter's detector fired\n\n"
            + markdown_grid(_table1_grid(summary, "miou_detected"), "extractor")
        )
    return out


def _table1_grid(summary: pd.DataFrame, col: str) -> pd.DataFrame:
    """Table 1's grid of ``col`` (an mIoU column): rows = fits, columns = model pairs, the
    best of each (model pair, method) in bold and the rest relative to it."""
    df = summary.copy()
    best = df.groupby(["generator", "segmenter", "method"])[col].transform("max")
    df["rel_to_best"] = (df[col] - best) / best
    labels = zip(df["extractor"], df["method"], strict=True)
    rows = list(dict.fromkeys(row_label(e, m) for e, m in labels))
    cols = list(dict.fromkeys(zip(df["generator"], df["segmenter"], strict=True)))
    grid = pd.DataFrame(
        {
            f"{g} / {s}": {
                row_label(r.extractor, r.method): miou_cell(getattr(r, col), r.rel_to_best)
                for r in df[(df.generator == g) & (df.segmenter == s)].itertuples()
            }
            for g, s in cols
        }
    )
    return grid.reindex(rows).fillna("–")


def _certificates(summary: pd.DataFrame) -> str:
    """The converged rows' stopping certificates, under Table 1."""
    conv = summary[summary["method"] == "converged"]
    if conv.empty or "grad_norm" not in conv:
        return ""
    grid = pd.DataFrame(
        {
            "stopping rule": [
                "L-BFGS certificate" if e == "LSE" else "held-out plateau"
                for e in conv["extractor"]
            ],
            "converged": ["yes" if c else "no (iteration cap)" for c in conv["converged"]],
            "iterations": [str(int(i)) for i in conv["iterations"]],
            "seconds": [f"{s:.0f}" for s in conv["train_seconds"]],
            "final loss": [f"{v:.5f}" for v in conv["final_loss"]],
            "‖∇‖∞": ["–" if pd.isna(v) else f"{v:.1e}" for v in conv["grad_norm"]],
        },
        index=[row_label(e, "converged") for e in conv["extractor"]],
    )
    return "\n\n" + markdown_grid(grid, "certificate")


def per_class_grid(iou: pd.DataFrame, row: str, value: str = "iou") -> pd.DataFrame:
    """Per-class IoU (%) with ``row`` values as rows and classes (segmenter order) as columns."""
    wide = iou.pivot_table(index=row, columns="class_index", values=value, sort=True) * 100
    names = iou.drop_duplicates("class_index").set_index("class_index")["class_name"]
    wide.columns = [names[c] for c in wide.columns]
    return wide.map(lambda v: "–" if pd.isna(v) else f"{v:.1f}")


def render_table6(tables: Tables) -> str:
    """Table 6: per-class IoU (%) of each fit (background ignored, Appx A)."""
    iou = sort_fits(with_method(tables["iou_per_class"]), ["method", "extractor"])
    iou["fit"] = [row_label(e, m) for e, m in zip(iou["extractor"], iou["method"], strict=True)]
    grid = per_class_grid(iou, "fit")
    return markdown_grid(grid.reindex(list(dict.fromkeys(iou["fit"]))), "extractor")


def has_values(df: pd.DataFrame, column: str) -> bool:
    """Whether ``df`` has ``column`` with a value (parts written before it existed have none)."""
    return column in df and bool(df[column].notna().any())


def predictor_label(predictor: str, n_shot) -> str:
    return f"{int(n_shot)}-shot LSE" if predictor == "LSE" and not pd.isna(n_shot) else predictor

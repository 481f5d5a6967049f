"""Paper-style tables rendered from result DataFrames (no I/O here)."""

from __future__ import annotations

import pandas as pd

EXTRACTOR_ORDER = ["LSE", "NSE-1", "NSE-2"]


def miou_from_rows(iou: pd.DataFrame) -> float:
    """mIoU of one fit's per-class rows: mean over the classes that counted (Appx A)."""
    return float(iou.loc[iou["images"] > 0, "iou"].mean())


def table1_summary(iou: pd.DataFrame) -> pd.DataFrame:
    """mIoU per (generator, segmenter, extractor) and the difference relative to the best.

    ``rel_diff`` is Appx D's (y_i − y*) / y* with y* the best mIoU of the same model pair.
    """
    counted = iou[iou["images"] > 0]
    summary = (
        counted.groupby(["generator", "segmenter", "extractor", "fit_key"], as_index=False)["iou"]
        .mean()
        .rename(columns={"iou": "miou"})
    )
    best = summary.groupby(["generator", "segmenter"])["miou"].transform("max")
    summary["rel_diff"] = (summary["miou"] - best) / best
    order = {name: i for i, name in enumerate(EXTRACTOR_ORDER)}
    return summary.sort_values(
        ["generator", "segmenter", "extractor"],
        key=lambda s: s.map(order) if s.name == "extractor" else s,
    ).reset_index(drop=True)


def table1_markdown(summary: pd.DataFrame) -> str:
    """Table 1 layout: extractors as rows, one column per model pair; best in bold, others
    with their relative difference in brackets, all in percent."""
    cols = [
        (g, s)
        for g, s in summary[["generator", "segmenter"]].drop_duplicates().itertuples(index=False)
    ]
    header = "| extractor | " + " | ".join(f"{g} / {s}" for g, s in cols) + " |"
    lines = [header, "|---|" + "---|" * len(cols)]
    extractors = [e for e in EXTRACTOR_ORDER if e in set(summary["extractor"])]
    for ext in extractors:
        cells = []
        for g, s in cols:
            row = summary[
                (summary.generator == g) & (summary.segmenter == s) & (summary.extractor == ext)
            ]
            if row.empty:
                cells.append("–")
                continue
            miou, rel = 100 * row["miou"].iloc[0], 100 * row["rel_diff"].iloc[0]
            cells.append(f"**{miou:.1f}**" if rel == 0 else f"{miou:.1f} ({rel:+.1f}%)")
        lines.append(f"| {ext} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_markdown(iou: pd.DataFrame) -> str:
    """Per-class IoU (%) with extractors as rows and classes as columns (Table 6 layout)."""
    wide = iou.pivot_table(index="extractor", columns="class_name", values="iou", sort=False) * 100
    wide = wide.reindex([e for e in EXTRACTOR_ORDER if e in wide.index])
    classes = list(dict.fromkeys(iou.sort_values("class_index")["class_name"]))
    wide = wide[[c for c in classes if c in wide.columns]]
    lines = [
        "| extractor | " + " | ".join(wide.columns) + " |",
        "|---|" + "---|" * len(wide.columns),
    ]
    for ext, row in wide.iterrows():
        lines.append(
            f"| {ext} | " + " | ".join("–" if pd.isna(v) else f"{v:.1f}" for v in row) + " |"
        )
    return "\n".join(lines)

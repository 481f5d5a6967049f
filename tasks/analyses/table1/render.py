"""The renderers of Tables 1 and 6: markdown from Table 1's tables, no I/O."""

from __future__ import annotations

import pandas as pd

from lineargan.render import (
    Tables,
    has_values,
    markdown_grid,
    miou_cell,
    pct,
    per_class_grid,
    row_label,
    sort_fits,
    with_method,
)


def render_table1(tables: Tables) -> str:
    """Table 1: one row per (extractor, fit method), one column per model pair; the best of
    each method in bold, the others with their difference relative to it, all in percent."""
    summary = sort_fits(with_method(tables["table1"]), ["method", "extractor"])
    grid = _table1_grid(summary, "miou")
    first = summary.iloc[0]
    notes = (
        "Best of each fit method in bold; brackets: difference relative to it (Appx D). "
        "Paper schedule: Adam, Appx D's 50 epochs; converged: the LSE by L-BFGS to a stationarity "
        "tolerance, the NSEs until their held-out loss stops improving (final loss: training "
        "loss for the LSE, held-out loss for the NSEs). "
        f"Training images: {int(first['n_train'])}, evaluation images: {int(first['n_eval'])}"
    )
    if "fallback_rate_train" in summary and not pd.isna(first["fallback_rate_train"]):
        notes += (
            f"; segmenter fallback rate (train/eval): {pct(first['fallback_rate_train'])}% / "
            f"{pct(first['fallback_rate_eval'])}%"
        )
    out = (
        markdown_grid(grid, "extractor")
        + f"\n\n{notes}."
        + _lse_against_nses(summary)
        + _stopping_rules(summary)
    )
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


def _lse_against_nses(summary: pd.DataFrame) -> str:
    """The headline: the best-fitted LSE (converged when there is one) against every NSE row,
    whatever its fit method, since the bold cells compare rows of one method only."""
    for method in ("converged", "schedule"):
        lse = summary[(summary["extractor"] == "LSE") & (summary["method"] == method)]
        if not lse.empty:
            break
    nses = summary[summary["extractor"] != "LSE"]
    if lse.empty or nses.empty or len(summary[["generator", "segmenter"]].drop_duplicates()) > 1:
        return ""
    miou = float(lse["miou"].iloc[0])
    parts = [
        f"{row_label(r.extractor, r.method)} {pct(r.miou)} % "
        f"({100 * (miou - r.miou) / r.miou:+.1f} %)"
        for r in nses.itertuples()
        if not pd.isna(r.miou) and r.miou > 0
    ]
    return (
        f"\n\n{row_label('LSE', method)} at {pct(miou)} % against every NSE row (in brackets: "
        "the LSE relative to it): " + "; ".join(parts) + "."
    )


def _stopping_rules(summary: pd.DataFrame) -> str:
    """How the converged rows stopped (the rule each met), under Table 1."""
    conv = summary[summary["method"] == "converged"]
    if conv.empty or "grad_norm" not in conv:
        return ""
    grid = pd.DataFrame(
        {
            "stopping rule": [
                "L-BFGS stationarity tolerance" if e == "LSE" else "held-out plateau"
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
    return "\n\n" + markdown_grid(grid, "stopping")


def render_table6(tables: Tables) -> str:
    """Table 6: per-class IoU (%) of each fit (background ignored, Appx A): the rows of
    ``iou_per_class`` (a table every run's evaluations share) of this Table 1's fits and
    evaluation store only."""
    t1, iou = tables["table1"], tables["iou_per_class"]
    mine = iou.set_index(["fit_key", "eval_digest"]).index.isin(
        t1.set_index(["fit_key", "eval_digest"]).index
    )
    iou = iou[mine].drop_duplicates(["fit_key", "class_index"])
    iou = sort_fits(with_method(iou), ["method", "extractor"])
    iou["fit"] = [row_label(e, m) for e, m in zip(iou["extractor"], iou["method"], strict=True)]
    grid = per_class_grid(iou, "fit")
    return markdown_grid(grid.reindex(list(dict.fromkeys(iou["fit"]))), "extractor")

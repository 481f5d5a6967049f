"""The renderer of Table 2 (few-shot LSE): markdown from the analysis's tables, no I/O."""

from __future__ import annotations

import pandas as pd

from lineargan.render import (
    METHOD_LABELS,
    Tables,
    markdown_grid,
    pct,
    per_class_grid,
    sort_fits,
    with_method,
)


def render_table2(tables: Tables) -> str:
    """Table 2: one row per (fit method, N), "mean ± max deviation" (%) and the ratio to the
    full LSE trained the same way."""
    summary = sort_fits(with_method(tables["fewshot_summary"]), ["method", "n_shot"])
    rows: dict[str, dict[str, str]] = {}
    for method, part in summary.groupby("method", sort=False):
        label = METHOD_LABELS.get(method, method)
        for r in part.itertuples(index=False):
            rows[f"{r.n_shot} ({label})"] = {
                "mIoU (%)": f"{pct(r.mean_miou)} ± {pct(r.max_dev)}",
                "of full LSE": "–" if pd.isna(r.ratio_to_full) else f"{pct(r.ratio_to_full)}%",
                "repeats": str(r.repeats),
                "detected only (%)": pct(getattr(r, "mean_miou_detected", None)),
            }
        ref = part["reference_miou"].iloc[0]
        rows[f"full ({label})"] = {
            "mIoU (%)": pct(ref),
            "of full LSE": "100%",
            "repeats": "–",
            "detected only (%)": "–",
        }
    grid = pd.DataFrame.from_dict(rows, orient="index")
    per = with_method(tables["fewshot_per_class"])
    per["fit"] = [
        f"{n} ({METHOD_LABELS.get(m, m)})"
        for n, m in zip(per["n_shot"], per["method"], strict=True)
    ]
    per = sort_fits(per, ["method", "n_shot"])
    per_class = per_class_grid(per, "fit").reindex(list(dict.fromkeys(per["fit"])))
    return (
        markdown_grid(grid, "N-shot")
        + "\n\nMean ± maximum deviation over repeats with disjoint training images; last "
        "column: mean relative to the full LSE trained the same way (paper schedule: Adam for "
        "the paper's iterations; converged: L-BFGS to the optimum, few-shot fits with a small "
        "ridge penalty). Detected only: the mean mIoU on the evaluation images where the "
        "segmenter's detector fired (the others are labelled from a fallback box)."
        "\n\n### Per-class IoU (%), mean over repeats\n\n" + markdown_grid(per_class, "N-shot")
    )

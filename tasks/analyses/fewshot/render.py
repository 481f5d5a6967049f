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

# What a few-shot row's fit is: the converged rows are ridge-regularised, λ chosen on held-out
# training images (the full LSE they are compared with is the plain converged one).
FEWSHOT_LABELS = {**METHOD_LABELS, "converged": "ridge, λ chosen on held-out"}


def _stopping(r) -> str:
    """ "met/repeats" for the fits of a row that reached their stopping rule ("–" if unknown)."""
    met = getattr(r, "stopped_by_rule", None)
    return "–" if met is None or pd.isna(met) else f"{int(met)}/{r.repeats}"


def render_table2(tables: Tables) -> str:
    """Table 2: one row per (fit method, N), "mean ± max deviation" (%), the ratio to the
    full LSE trained the same way, the ridge penalties chosen and how many fits met their
    stopping rule."""
    summary = sort_fits(with_method(tables["fewshot_summary"]), ["method", "n_shot"])
    rows: dict[str, dict[str, str]] = {}
    for method, part in summary.groupby("method", sort=False):
        label = FEWSHOT_LABELS.get(method, method)
        for r in part.itertuples(index=False):
            rows[f"{r.n_shot} ({label})"] = {
                "mIoU (%)": f"{pct(r.mean_miou)} ± {pct(r.max_dev)}",
                "of full LSE": "–" if pd.isna(r.ratio_to_full) else f"{pct(r.ratio_to_full)}%",
                "repeats": str(r.repeats),
                "detected only (%)": pct(getattr(r, "mean_miou_detected", None)),
                "λ (ridge)": getattr(r, "l2", "") or "–",
                "stopping rule met": _stopping(r),
            }
        ref = part["reference_miou"].iloc[0]
        rows[f"full ({METHOD_LABELS.get(method, method)})"] = {
            "mIoU (%)": pct(ref),
            "of full LSE": "100%",
            "repeats": "–",
            "detected only (%)": "–",
            "λ (ridge)": "–",
            "stopping rule met": "–",
        }
    grid = pd.DataFrame.from_dict(rows, orient="index")
    per = with_method(tables["fewshot_per_class"])
    per["fit"] = [
        f"{n} ({FEWSHOT_LABELS.get(m, m)})"
        for n, m in zip(per["n_shot"], per["method"], strict=True)
    ]
    per = sort_fits(per, ["method", "n_shot"])
    per_class = per_class_grid(per, "fit").reindex(list(dict.fromkeys(per["fit"])))
    return (
        markdown_grid(grid, "N-shot")
        + "\n\nMean ± maximum deviation over repeats with disjoint training images; 'of full "
        "LSE': mean relative to the full LSE trained the same way (paper schedule: Adam for "
        "the protocol's iterations; ridge: L-BFGS to the solver's stopping rule on the loss + "
        "a ridge penalty λ, chosen per fit by the mIoU on held-out training images that no "
        "draw uses, never the evaluation images; compared with the plain converged full LSE). "
        "λ (ridge): the penalties chosen, with counts. Stopping rule met: fits that reached "
        "it (the schedule's is its iteration count; the solver's is its tolerance, else it hit "
        "its iteration cap). Detected only: the mean mIoU on the evaluation images where the "
        "segmenter's detector fired (the others are labelled from a fallback box)."
        "\n\n### Per-class IoU (%), mean over repeats\n\n" + markdown_grid(per_class, "N-shot")
    )

"""The renderer of Table 3 (SCS): markdown from the analysis's tables, no I/O."""

from __future__ import annotations

import pandas as pd

from lineargan.render import Tables, markdown_grid, pct, predictor_label


def render_table3(tables: Tables) -> str:
    """Table 3: SCS agreement with the targets (%), "mean ± max deviation" over repeats, per
    few-shot N and for the baseline; both aggregations (Eq. 7 and the authors' pooled one)."""
    summary = tables["scs_summary"].copy()
    summary["order"] = [
        (1, 0) if p != "LSE" else (0, int(n))
        for p, n in zip(summary["predictor"], summary["n_shot"], strict=True)
    ]
    summary = summary.sort_values("order")
    headline = summary["headline"].iloc[0]
    grid = pd.DataFrame(
        {
            "agreement, Eq. 7 (%)": [
                f"{pct(a)} ± {pct(d)}"
                for a, d in zip(summary["agreement"], summary["max_dev"], strict=True)
            ],
            "pooled, authors (%)": [
                f"{pct(a)} ± {pct(d)}"
                for a, d in zip(summary["pooled"], summary["pooled_max_dev"], strict=True)
            ],
            "initial candidate (%)": [pct(v) for v in summary["agreement_initial"]],
            "repeats": summary["repeats"].astype(str).to_numpy(),
            "pairs": summary["pairs"].astype(str).to_numpy(),
        },
        index=[
            f"SCS ({predictor_label(p, n)})"
            for p, n in zip(summary["predictor"], summary["n_shot"], strict=True)
        ],
    )
    samples = tables["scs_samples"]
    first = samples.iloc[0]
    return (
        markdown_grid(grid, "P") + f"\n\nProtocol `{first['protocol']}` (headline: "
        f"{'Eq. 7, the mean of per-pair mIoU' if headline == 'paper' else 'pooled per class over pairs'})"
        f"; {samples['target'].nunique()} targets × {samples['sample'].nunique()} samples, "
        f"{int(first['n_init'])} candidates each; agreement scored by the reference segmenter. "
        "Initial candidate: the agreement of the chosen starting image before optimisation."
    )

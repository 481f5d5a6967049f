"""The renderer of Table 3 (SCS): markdown from the analysis's tables, no I/O."""

from __future__ import annotations

import pandas as pd

from lineargan.baseline import is_baseline_predictor
from lineargan.render import Tables, interval, markdown_grid, pct, predictor_label, with_interval

HEADLINES = {
    "paper": "Eq. 7, the mean of per-pair mIoU",
    "authors": "the authors' aggregate_iou, each class over the pairs where it occurs",
    # tables written before the authors' aggregation was stored led with the pooled one
    "pooled": "Σ∩/Σ∪ per class over all pairs, which is neither protocol's aggregation",
}


def render_table3(tables: Tables) -> str:
    """Table 3: SCS agreement with the targets (%), "mean ± max deviation" over repeats, per
    few-shot N and for the baseline; the paper's (Eq. 7) and the authors' (``aggregate_iou``)
    aggregation side by side, the protocol's first."""
    summary = tables["scs_summary"].copy()
    summary["order"] = [
        (1, 0) if p != "LSE" else (0, int(n))
        for p, n in zip(summary["predictor"], summary["n_shot"], strict=True)
    ]
    summary = summary.sort_values("order")
    headline = summary["headline"].iloc[0]

    def spread(mean: str, dev: str) -> list[str]:
        return [f"{pct(a)} ± {pct(d)}" for a, d in zip(summary[mean], summary[dev], strict=True)]

    columns = {"paper": ("Eq. 7, paper (%)", spread("agreement", "max_dev"))}
    if "authors" in summary:  # not in tables written before it was stored
        columns["authors"] = ("aggregate_iou, authors (%)", spread("authors", "authors_max_dev"))
    else:
        columns["pooled"] = ("pooled Σ∩/Σ∪, neither's (%)", spread("pooled", "pooled_max_dev"))
    order = [headline, *(k for k in columns if k != headline)]
    intervals = {}
    if "headline_lo" in summary:  # not in tables written before intervals were stored
        intervals = {
            "95 % interval (targets)": [
                interval(lo, hi)
                for lo, hi in zip(summary["headline_lo"], summary["headline_hi"], strict=True)
            ],
            "vs baseline [95 %]": [
                "–"
                if pd.isna(d) or is_baseline_predictor(p)  # the baseline itself
                else with_interval(d, lo, hi, signed=True)
                for p, d, lo, hi in zip(
                    summary["predictor"],
                    summary["vs_baseline"],
                    summary["vs_baseline_lo"],
                    summary["vs_baseline_hi"],
                    strict=True,
                )
            ],
        }
    grid = pd.DataFrame(
        {
            columns[headline][0]: columns[headline][1],
            **intervals,
            **dict(columns[k] for k in order[1:]),
            "initial candidate, Eq. 7 (%)": [pct(v) for v in summary["agreement_initial"]],
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
        f"{HEADLINES[headline]}); latent space `{first['edit_space']}`; "
        f"{samples['target'].nunique()} targets × {samples['sample'].nunique()} samples, "
        f"{int(first['n_init'])} candidates each; agreement scored by the reference segmenter. "
        "Initial candidate: the agreement of the chosen starting image before optimisation. "
        + (
            f"Intervals: 95 % percentile bootstrap of the headline over the targets "
            f"({int(summary['bootstrap'].iloc[0])} resamples, the same for every P, so the "
            "difference to the baseline is paired). "
            if intervals
            else ""
        )
        + "The Parquet table also holds `pooled` (Σ∩/Σ∪ per class over all pairs, neither "
        "protocol's aggregation)."
    )

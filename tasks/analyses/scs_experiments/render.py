"""The renderer of the SCS experiments (issue #26): markdown from the analysis's tables."""

from __future__ import annotations

import pandas as pd

from lineargan.render import Tables, markdown_grid, pct, with_interval

FAMILY_ORDER = {"LSE": 0, "UNet-weakened": 1, "UNet": 2, "candidates": 3}


def _label(family: str, n_shot) -> str:
    if family == "LSE":
        return f"{n_shot}-shot LSE"
    if family == "UNet-weakened":
        return f"UNet matched to {n_shot}-shot"
    return family


def render_experiments(tables: Tables) -> str:
    """Per protocol: each P's mIoU against the reference, its chosen candidate's agreement
    (no optimisation), the optimised agreement, the gain of the optimisation and the
    difference to the full UNet, each with its 95 % interval; then the oracle and the first
    candidate."""
    summary = tables["scs_experiment_summary"]
    weakened = tables["scs_experiment_predictors"]
    parts = []
    for protocol in sorted(summary["protocol"].unique(), key=lambda p: p != "paper"):
        rows = summary[summary["protocol"] == protocol]
        cell = {
            (r.family, None if pd.isna(r.n_shot) else int(r.n_shot), r.arm): r
            for r in rows.itertuples(index=False)
        }
        ps = sorted(
            {(f, n) for f, n, _ in cell if f != "candidates"},
            key=lambda k: (FAMILY_ORDER.get(k[0], 9), k[1] or 0),
        )

        def show(f, n, arm, column="agreement", lo="lo", hi="hi", signed=False, cell=cell):
            r = cell.get((f, n, arm))
            if r is None:
                return "–"
            return with_interval(getattr(r, column), getattr(r, lo), getattr(r, hi), signed)

        grid = pd.DataFrame(
            {
                "P's mIoU vs reference (%)": [pct(cell[f, n, "optimised"].p_miou) for f, n in ps],
                "chosen candidate, no optimisation": [show(f, n, "chosen") for f, n in ps],
                "SCS (optimised)": [show(f, n, "optimised") for f, n in ps],
                "gain from optimisation": [show(f, n, "gain", signed=True) for f, n in ps],
                "SCS − full UNet": [
                    show(f, n, "optimised", "vs_unet", "vs_unet_lo", "vs_unet_hi", True)
                    for f, n in ps
                ],
                "LSE − matched UNet": [
                    show(f, n, "optimised", "vs_matched", "vs_matched_lo", "vs_matched_hi", True)
                    for f, n in ps
                ],
                "members": [str(cell[f, n, "optimised"].members) for f, n in ps],
            },
            index=[_label(f, n) for f, n in ps],
        )
        first = rows.iloc[0]
        oracle, chance = (
            cell.get(("candidates", None, "oracle")),
            cell.get(("candidates", None, "first")),
        )
        lines = [f"**Protocol `{protocol}`** ({int(first.pairs)} pairs, Eq. 7 %):", ""]
        lines.append(markdown_grid(grid, "P"))
        if oracle is not None and chance is not None:
            lines.append(
                "\nWithout optimisation, from the same candidates: the reference's own choice "
                f"(oracle) {with_interval(oracle.agreement, oracle.lo, oracle.hi)}, the first "
                f"candidate (no choice) {with_interval(chance.agreement, chance.lo, chance.hi)}."
            )
        parts.append("\n".join(lines))
    steps = weakened[weakened["family"] == "UNet-weakened"].groupby("steps")["miou"].mean()
    return (
        "\n\n".join(parts)
        + "\n\nEq. 7 agreement with the targets (%), scored by the reference segmenter, with "
        f"95 % paired bootstrap intervals over the targets ({int(summary['bootstrap'].iloc[0])} "
        "resamples, the same for every row, so differences are paired); members (LSE repeats, "
        "UNet seeds) are averaged inside each resample. Weakened UNets: the run's UNet "
        "trained for fewer steps, the count per N whose mIoU is closest to the N-shot LSE's ("
        + ", ".join(f"{k} steps {pct(v)} %" for k, v in steps.items())
        + "). The Parquet summary also holds the authors' aggregate_iou with its interval."
    )

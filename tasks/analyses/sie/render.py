"""The renderer of Fig 5 (SIE): markdown from the analysis's tables, no I/O."""

from __future__ import annotations

import pandas as pd

from lineargan.render import Tables, interval, markdown_grid, pct


def method_label(method: str, predictor: str, n_shot) -> str:
    """A method's name in the figure and the tables: "colour edit", "SIE (8-shot LSE)",
    "SIE (full LSE)" (Table 1's converged LSE), "SIE (UNet)"."""
    if method == "colour":
        return "colour edit"
    if predictor == "LSE":
        return "SIE (full LSE)" if pd.isna(n_shot) else f"SIE ({int(n_shot)}-shot LSE)"
    return f"SIE ({predictor})"


def _reference_cell(value: float, scored: int) -> str:
    """A reference score, or why there is none: it could not see any edit of the row."""
    return "not scored" if scored == 0 else pct(value)


def _with_interval(cells: list[str], summary: pd.DataFrame, score: str) -> list[str]:
    """``cells`` with the score's 95 % interval over the edits appended where there is one
    (tables written before intervals were stored have none)."""
    if f"{score}_lo" not in summary:
        return cells
    return [
        cell if pd.isna(lo) else f"{cell} {interval(lo, hi)}"
        for cell, lo, hi in zip(cells, summary[f"{score}_lo"], summary[f"{score}_hi"], strict=True)
    ]


def render_sie(tables: Tables) -> str:
    """Fig 5 in numbers, one row per (edit operation, method): the reference segmenter's view
    (agreement of its mask of the edited image with the target inside and outside the edited
    region; "not scored" for an operation it cannot register, with the reason below), P's own
    view of the same (its mask of the result against the target it optimised towards) and its
    loss before and after, and the mean pixel change inside and outside."""
    summary = tables["sie_summary"]
    index = [
        f"{op} · {method_label(m, p, n)}"
        for op, m, p, n in zip(
            summary["op"], summary["method"], summary["predictor"], summary["n_shot"], strict=True
        )
    ]
    scored = summary["scored"].to_numpy()
    grid = pd.DataFrame(
        {
            "edits (scored by reference)": [
                f"{e} ({s})" for e, s in zip(summary["edits"], scored, strict=True)
            ],
            "reference: inside agrees (%) [95 %]": _with_interval(
                [
                    _reference_cell(v, s)
                    for v, s in zip(summary["agreement_inside"], scored, strict=True)
                ],
                summary,
                "agreement_inside",
            ),
            "reference: outside agrees (%)": [
                _reference_cell(v, s)
                for v, s in zip(summary["agreement_outside"], scored, strict=True)
            ],
            "P: inside agrees (%) [95 %]": _with_interval(
                [pct(v) for v in summary["own_agreement_inside"]], summary, "own_agreement_inside"
            ),
            "P: outside agrees (%)": [pct(v) for v in summary["own_agreement_outside"]],
            "loss before → after": [
                f"{b:.3f} → {a:.3f}"
                for b, a in zip(summary["loss_initial"], summary["loss_final"], strict=True)
            ],
            "inside: change": [f"{v:.1f}" for v in summary["change_inside"]],
            "outside: change": [f"{v:.1f}" for v in summary["change_outside"]],
        },
        index=index,
    )
    edits = tables["sie_edits"]
    reasons = summary[summary["unscored_reason"] != ""].drop_duplicates("op")
    notes = "".join(
        f"\n- **{op}** not scored by the reference where {reason}."
        for op, reason in zip(reasons["op"], reasons["unscored_reason"], strict=True)
    )
    return (
        markdown_grid(grid, "operation · method")
        + f"\n\nProtocol `{edits['protocol'].iloc[0]}`; {edits['image'].nunique()} held-out "
        "images, each edit planned on the reference segmenter's mask (class by area rank, the "
        "class it grows into, an added disc's place) and carried out on each P's own mask of "
        "the original (SIE's target) and on the reference's mask (the target it is scored "
        "against; the colour edit paints the reference's region). Reference: pixels where the "
        "reference segmenter's mask of the edited image equals the target, inside the edited "
        "region (the edit happened) and outside it (the rest was kept), only for operations it "
        "can register. P: the same with P's own mask of the result and its own target (what P "
        "believes it made; the colour edit has no P; – where P's own mask shows nothing to edit: "
        "no such part, or no fill class around the added disc). Loss: P's edit loss L_s (colour edit: "
        "L_c + L_p) before and after the optimisation. Change: mean absolute pixel change "
        "(0-255). [95 %]: percentile bootstrap interval over the operation's edits (the same "
        "resampled edits for every method; `sie_summary` also holds each method's paired "
        "difference to the baseline P, `*_vs_baseline`)." + notes
    )

"""The renderer of Fig 5 (SIE): markdown from the analysis's tables, no I/O."""

from __future__ import annotations

import pandas as pd

from lineargan.render import Tables, markdown_grid, pct, predictor_label


def render_sie(tables: Tables) -> str:
    """Fig 5 in numbers: per method, agreement of the edited image with the target inside and
    outside the edited region, and the mean pixel change in each."""
    summary = tables["sie_summary"]
    summary = summary[summary["op"] == "all"]
    index = [
        "colour edit" if m == "colour" else f"SIE ({predictor_label(p, n)})"
        for m, p, n in zip(summary["method"], summary["predictor"], summary["n_shot"], strict=True)
    ]
    grid = pd.DataFrame(
        {
            "inside: agrees (%)": [pct(v) for v in summary["agreement_inside"]],
            "outside: agrees (%)": [pct(v) for v in summary["agreement_outside"]],
            "inside: relabelled (%)": [pct(v) for v in summary["relabel_inside"]],
            "outside: relabelled (%)": [pct(v) for v in summary["relabel_outside"]],
            "inside: change": [f"{v:.1f}" for v in summary["change_inside"]],
            "outside: change": [f"{v:.1f}" for v in summary["change_outside"]],
            "mIoU vs target (%)": [pct(v) for v in summary["miou"]],
            "edits": summary["edits"].astype(str).to_numpy(),
        },
        index=index,
    )
    edits = tables["sie_edits"]
    ops = ", ".join(dict.fromkeys(edits["op"]))
    return (
        markdown_grid(grid, "method")
        + f"\n\nProtocol `{edits['protocol'].iloc[0]}`; {edits['image'].nunique()} held-out "
        f"images × edits ({ops}) of their reference masks. Agrees: pixels where the reference "
        "segmenter's mask of the edited image equals the target, inside the edited region (the "
        "edit happened) and outside it (the rest was kept); relabelled: pixels whose reference "
        "label changed from the original; change: mean absolute pixel change (0-255)."
    )

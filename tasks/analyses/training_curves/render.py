"""The renderer of Fig 8 (mIoU during training): markdown from the analysis's tables, no I/O."""

from __future__ import annotations

from lineargan.render import Tables, has_values, markdown_grid, pct, row_label, sort_fits


def render_training_curves(tables: Tables) -> str:
    """One column per fit, one row per snapshot step, and last the weights each fit returned
    (with its number of steps): where each extractor's mIoU stopped moving."""
    summary = sort_fits(tables["training_curve_summary"], ["method", "extractor"])
    fits = list(dict.fromkeys(summary["fit_label"]))
    labels = {
        f: row_label(*summary.loc[summary["fit_label"] == f, ["extractor", "method"]].iloc[0])
        for f in fits
    }
    steps = summary[summary["point"] == "snapshot"]
    grid = steps.pivot(index="iteration", columns="fit_label", values="miou").reindex(columns=fits)
    cells = grid.map(pct)
    cells.index = [str(i) for i in grid.index]
    final = summary[summary["point"] == "final"].set_index("fit_label")
    cells.loc["returned"] = [
        f"**{pct(final.at[f, 'miou'])}** ({int(final.at[f, 'iteration'])} steps)" for f in fits
    ]
    if has_values(final, "miou_detected"):
        cells.loc["returned, detected only"] = [pct(final.at[f, "miou_detected"]) for f in fits]
    cells.columns = [labels[f] for f in fits]
    first = summary.iloc[0]
    images = "evaluation" if first["split"] == "eval" else "training"
    note = (
        f"mIoU (%) after each step that is a power of two, and of the weights each fit "
        f"returned, on {int(first['n_images'])} {images} images"
    )
    if first["split"] == "eval":
        note += " (the returned row is Table 1's mIoU)"
    return markdown_grid(cells.fillna("–"), "step") + "\n\n" + note + "."

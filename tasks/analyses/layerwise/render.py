"""The renderer of Appx I (layer-wise): markdown from the analysis's tables, no I/O."""

from __future__ import annotations

import pandas as pd

from lineargan.render import Tables, has_values, markdown_grid, pct, per_class_grid


def render_layerwise(tables: Tables) -> str:
    """Appx I: mIoU of each layer's own prediction argmax u↑(S_i) and of the sum (Σ)."""
    summary = tables["layerwise_summary"].sort_values(
        "layer_index", key=lambda s: s.where(s >= 0, 1e9)
    )
    grid = pd.DataFrame(
        {
            "name": summary["layer_name"].to_numpy(),
            "size": summary["layer_size"].astype(str).to_numpy(),
            "mIoU (%)": [pct(v) for v in summary["miou"]],
        },
        index=["Σ" if i < 0 else str(i) for i in summary["layer_index"]],
    )
    if has_values(summary, "miou_detected"):
        grid["detected only (%)"] = [pct(v) for v in summary["miou_detected"]]
    first = summary.iloc[0]
    rows = tables["layerwise"]
    per_class = per_class_grid(rows, "layer_name").reindex(list(summary["layer_name"]))
    return (
        markdown_grid(grid, "layer")
        + f"\n\nLSE trained with Eq. 8, α = {first['alpha']:g}, {int(first['iterations'])} "
        f"iterations on {int(first['n_train'])} images; evaluated on {int(first['n_eval'])} "
        "images.\n\n### Per-class IoU (%)\n\n" + markdown_grid(per_class, "layer")
    )

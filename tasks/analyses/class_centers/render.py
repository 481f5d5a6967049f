"""The renderer of Fig 4 (class centers): markdown from the analysis's tables, no I/O."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lineargan.render import Tables, markdown_grid, pct, per_class_grid


def render_fig4(tables: Tables) -> str:
    """Sec 3.3 / Fig 4: per-class IoU and mIoU of nearest-class-center segmentation, beside
    the LSE of Table 1."""
    iou, s = tables["class_centers_iou"], tables["class_centers_summary"].iloc[0]
    grid = per_class_grid(iou.assign(method="class centers"), "method")
    grid.insert(0, "mIoU", pct(s["miou"]))
    if not pd.isna(s.get("miou_detected", np.nan)):
        grid.insert(1, "mIoU detected only", pct(s["miou_detected"]))
    if not pd.isna(s["lse_miou"]):
        grid.loc["LSE (Table 1)"] = ["–"] * len(grid.columns)
        grid.loc["LSE (Table 1)", "mIoU"] = pct(s["lse_miou"])
    lines = [
        markdown_grid(grid, "method"),
        "",
        f"IoU in % (Appx A, background ignored). Centers from {int(s['n_images'])} training "
        f"images (paper: 3000), evaluated on {int(s['n_eval'])} images"
        + (
            f" ({int(s['n_eval_detected'])} labelled by the segmenter's detector)"
            if not pd.isna(s.get("n_eval_detected", np.nan))
            else ""
        )
        + "; unit feature vectors of "
        f"all layers at {int(s['resolution'])}² (n = {int(s['feature_dim'])}); the background "
        "has its own center.",
    ]
    centers = tables.get("class_centers")
    if centers is not None:
        missing = [r.class_name for r in centers.itertuples() if len(r.center) == 0]
        if missing:
            lines.append(f"\nClasses without any training pixel (no center): {', '.join(missing)}.")
    if not pd.isna(s["lse_miou"]) and s["lse_miou"] > 0:
        lines.append(f"\nClass centers reach {100 * s['miou'] / s['lse_miou']:.1f}% of the LSE.")
    return "\n".join(lines)

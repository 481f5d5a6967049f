"""The renderer of the baseline segmenter (SCS / SIE): markdown from the analysis's tables, no I/O."""

from __future__ import annotations

import pandas as pd

from lineargan.render import Tables, markdown_grid, pct


def render_baseline_segmenter(tables: Tables) -> str:
    """The baseline UNet's per-class IoU and mIoU against the reference segmenter's labels on
    the evaluation split, on all images and on those where the reference's detector fired."""
    rows = tables["baseline_segmenter"].sort_values("class_index")
    first = rows.iloc[0]
    grid = pd.DataFrame(
        {
            "all images (%)": [pct(v) for v in rows["iou"]] + [pct(first["miou"])],
            "detected only (%)": [pct(v) for v in rows["iou_detected"]]
            + [pct(first["miou_detected"])],
        },
        index=[*rows["class_name"], "**mIoU**"],
    )
    return (
        f"Baseline UNet vs the reference segmenter ({first['segmenter']}) on the evaluation "
        "split: IoU of the UNet's labels against the reference labels.\n\n"
        + markdown_grid(grid, "class")
        + f"\n\nUNet trained for {int(first['iterations'])} iterations "
        f"({first['train_seconds']:.0f} s, final loss {first['final_loss']:.3f}) on "
        f"{int(first['n_train'])} training images; evaluated on {int(first['n_eval'])} images, "
        f"{int(first['n_eval_detected'])} of them detected by the reference segmenter."
        + _holdout(first)
    )


def _holdout(first: pd.Series) -> str:
    """The sentence on the held-out part of the training store (tables from before it
    existed have no such columns)."""
    if "n_holdout" not in first or not first["n_holdout"]:
        return ""
    return (
        f" Its settings are chosen on the training store's {int(first['n_holdout'])} held-out "
        f"images, never on the evaluation split: mIoU there {pct(first['miou_holdout'])} % "
        f"({pct(first['miou_holdout_detected'])} % on the detected ones)."
    )

"""The renderer of Tables 4 and 5 (category selection): markdown from the analysis's tables, no I/O."""

from __future__ import annotations

import pandas as pd

from lineargan.render import (
    Tables,
    extractor_order,
    has_values,
    markdown_grid,
    miou_cell,
    pct,
    per_class_grid,
)


def render_table4(tables: Tables) -> str:
    """Tables 4 and 5 (Appx E): mIoU of both rounds on the selected categories, per-class IoU
    of the kept categories, and the dropped ones."""
    table, summary = tables["category_selection"], tables["category_selection_summary"]
    first = summary.iloc[0]
    extractors = extractor_order(summary["extractor"])
    fate = "mapped to background" if first["dropped_as"] == "background" else "ignored (255)"
    t4 = pd.DataFrame(
        {
            label: {
                r.extractor: miou_cell(r.miou, r.rel_diff)
                for r in summary[summary["round"] == rnd].itertuples()
            }
            for rnd, label in (("all", "trained on all classes"), ("selected", "retrained"))
        }
    ).reindex(extractors)
    if has_values(summary, "miou_detected"):
        for rnd, label in (
            ("all", "all classes, detected only"),
            ("selected", "retrained, detected only"),
        ):
            t4[label] = pd.Series(
                {
                    r.extractor: pct(r.miou_detected)
                    for r in summary[summary["round"] == rnd].itertuples()
                }
            )
    lines = [
        f"A class is kept when any extractor trained on all classes predicts it with IoU > "
        f"{100 * first['threshold']:.3g}%; kept {first['n_kept']} of {first['n_total']} classes "
        f"(background included); dropped classes are {fate} when retraining."
        + (
            " Every class was kept, so round 2 reuses round 1."
            if first["n_kept"] == first["n_total"]
            else ""
        ),
        "",
        "### Table 4 — mIoU (%) on the selected categories",
        "",
        markdown_grid(t4.fillna("–"), "extractor"),
        "",
        "### Table 5 — IoU (%) of each selected category",
        "",
    ]
    kept = table[table["kept"]]
    grid = per_class_grid(kept.assign(row=kept["round"] + " " + kept["extractor"]), "row")
    order = [f"{rnd} {e}" for rnd in ("all", "selected") for e in extractors]
    lines.append(markdown_grid(grid.reindex([o for o in order if o in grid.index]), "round"))
    dropped = table[(table["round"] == "all") & ~table["kept"]]
    lines += ["", "### Dropped categories (IoU %, trained on all classes)", ""]
    if dropped.empty:
        lines.append("None: every class passed the threshold.")
    else:
        lines.append(markdown_grid(per_class_grid(dropped, "extractor").T, "class"))
    return "\n".join(lines)

"""The SeFa summary: markdown from the analysis's tables, no I/O."""

from __future__ import annotations

import pandas as pd

from lineargan.render import Tables, markdown_grid, pct

LSE = "LSE"


def _pp(x: float) -> str:
    """A fraction of the image as signed percentage points."""
    return "–" if pd.isna(x) else f"{100 * x:+.1f}"


def render_sefa(tables: Tables) -> str:
    """SeFa's top directions named by the LSE: eigenvalue, name, locality, the per-class area
    change at the largest α, and the supervised direction of each class beside them."""
    dirs = tables["sefa_directions"].sort_values("direction")
    sem = tables["sefa_semantics"]
    lse = sem[(sem.labeller == LSE) & (sem.class_index != 0)]
    alpha = float(lse.alpha.max()) if (lse.alpha > 0).any() else float(lse.alpha.min())
    at = lse[lse.alpha == alpha]
    has_ref = bool(dirs.reference_name.astype(bool).any())

    table = pd.DataFrame(
        {
            "eigenvalue (share %)": [
                f"{r.eigenvalue:.2f} ({pct(r.eigenvalue_share)})" for r in dirs.itertuples()
            ],
            "LSE: what it does": list(dirs.name),
            "changes in one class's region (%, enrichment)": [
                f"{pct(r.dominant_share)} {r.dominant_class} (×{r.dominant_enrichment:.1f})"
                for r in dirs.itertuples()
            ],
            f"largest area change at α={alpha:+g}": list(dirs.largest_change),
            f"pixels relabelled at α={alpha:+g} (%)": [pct(v) for v in dirs.changed_at_max],
        },
        index=[f"#{k}" for k in dirs.direction],
    )
    if has_ref:
        table["reference segmenter"] = list(dirs.reference_name)
    layers = list(dirs.layers.iloc[0]) if len(dirs) else []
    n_sem = int(dirs.semantic.sum())
    lines = [
        markdown_grid(table, "direction"),
        "",
        f"{n_sem} of {len(dirs)} directions are semantic by the locality measure: one class's "
        "region (the union of its masks before and after the edit) holds at least "
        "`sefa.dominance` of the pixels the LSE relabels at the largest |α|, at least "
        "`sefa.enrichment` times the share its size gives it; "
        + (f"w+ entries edited: {layers}." if layers else "the whole latent is edited."),
        "",
        f"Area change per class at α={alpha:+g} (percentage points of the image, LSE):",
        "",
        markdown_grid(_grid(at, "area_change", _pp), "direction"),
        "",
        "Share of the relabelled pixels inside each class's region (%):",
        "",
        markdown_grid(_grid(at, "inside", pct), "direction"),
    ]
    sup = tables.get("sefa_supervised")
    if sup is not None and len(sup):
        lines += ["", *_supervised_lines(sup[sup.class_index != 0])]
    return "\n".join(lines)


def _grid(rows: pd.DataFrame, value: str, cell) -> pd.DataFrame:
    """``value`` per direction (rows, "#k") and class (columns), each cell by ``cell``."""
    wide = rows.pivot_table(index="direction", columns="class_index", values=value, sort=True)
    names = rows.drop_duplicates("class_index").set_index("class_index")["class_name"]
    wide.columns = [names[c] for c in wide.columns]
    wide.index = [f"#{k}" for k in wide.index]
    return wide.map(cell)


def _supervised_lines(sup: pd.DataFrame) -> list[str]:
    """Per class, the SeFa direction closest to the direction that grows its LSE area."""
    rows = []
    for (_, name), g in sup.groupby(["class_index", "class_name"], sort=True):
        best = g.loc[g.cosine.abs().idxmax()]
        rows.append(
            {
                "class": name,
                "closest SeFa direction": f"#{int(best.direction)}",
                "cosine": f"{best.cosine:+.2f}",
                "share in the top directions' span (%)": pct(best.span_share),
            }
        )
    return [
        "Supervised counterpart: per class, the mean gradient of its soft LSE area w.r.t. the "
        "edit, and the SeFa direction it is closest to (|cosine|):",
        "",
        markdown_grid(pd.DataFrame(rows).set_index("class"), "class"),
    ]

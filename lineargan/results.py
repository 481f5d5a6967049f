"""Query API: load any result table as a DataFrame and render any paper table from Parquet alone.

    from lineargan import results
    results.load_table("fewshot_summary")            # every run, every profile
    print(results.render("table2", profile="quick"))  # newest quick run, paper layout

A run's ``results_index`` part names the exact table part (file) each experiment wrote, so
rendering reads those files, whichever run first computed them (reused analyses keep their
original files).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from lineargan.errors import LinearGanError
from lineargan.fewshot import table2_markdown
from lineargan.jobs.category_selection import category_selection_markdown
from lineargan.paths import default_results_root
from lineargan.render import per_class_markdown, table1_markdown
from storage.tables import read_table
from storage.target import Target


def load_table(name: str, results_root: str | None = None) -> pd.DataFrame:
    """Any result table (all runs); schemas in ``storage/tables.py`` and the job modules."""
    return read_table(results_root or default_results_root(), name)


def latest_index(results_root: str | None = None, profile: str | None = None) -> pd.DataFrame:
    """The ``results_index`` rows of the newest reproduce run (of ``profile`` if given)."""
    index = load_table("results_index", results_root)
    if profile:
        index = index[index["profile"] == profile]
    if index.empty:
        raise LinearGanError(
            f"no reproduce run{f' of profile {profile!r}' if profile else ''} in the results index",
            "run the reproduce flow first (bash scripts/run.sh or python -m flows.reproduce)",
        )
    newest = index.sort_values("created_at").iloc[-1]["run_id"]
    return index[index["run_id"] == newest]


def run_table(index: pd.DataFrame, experiment: str, table: str) -> pd.DataFrame:
    """The part of ``table`` that ``experiment`` wrote for the run described by ``index``."""
    rows = index[(index["experiment"] == experiment) & (index["kind"] == "table") & (index["name"] == table)]
    if rows.empty:
        raise LinearGanError(
            f"the run {index['run_id'].iloc[0]} has no {table!r} from {experiment!r}",
            "rerun reproduce with that analysis enabled (RunConfig.analyses)",
        )
    return pd.read_parquet(_open(rows["path"].iloc[0]))


def read_table_url(url: str) -> pd.DataFrame:
    """A whole table directory (or one part) given by URL, as recorded in the index."""
    target = Target(url)
    if target.path.endswith(".parquet"):
        return pd.read_parquet(_open(url))
    parts = sorted(p for p in target.fs.ls(target.path, detail=False) if p.endswith(".parquet"))
    return pd.concat([pd.read_parquet(target.fs.open(p, "rb")) for p in parts], ignore_index=True)


def _open(url: str):
    target = Target(url)
    return target.fs.open(target.path, "rb")


def _pct_grid(wide: pd.DataFrame, corner: str) -> str:
    lines = [f"| {corner} | " + " | ".join(str(c) for c in wide.columns) + " |", "|---|" + "---|" * len(wide.columns)]
    for idx, row in wide.iterrows():
        cells = ["–" if pd.isna(v) else f"{v:.1f}" for v in row]
        lines.append(f"| {idx} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _table1(index: pd.DataFrame) -> str:
    return table1_markdown(run_table(index, "table1", "table1"))


def _table6(index: pd.DataFrame) -> str:
    t1 = run_table(index, "table1", "table1")
    root_rows = index[(index["experiment"] == "table1") & (index["name"] == "iou_per_class")]
    iou = read_table_url(root_rows["path"].iloc[0])
    iou = iou[iou["fit_key"].isin(t1["fit_key"])].drop_duplicates(["fit_key", "class_index"])
    return per_class_markdown(iou)


def _table2(index: pd.DataFrame) -> str:
    return table2_markdown(run_table(index, "fewshot", "fewshot_summary"))


def _table4(index: pd.DataFrame) -> str:
    table = run_table(index, "category_selection", "category_selection")
    summary = run_table(index, "category_selection", "category_selection_summary")
    return category_selection_markdown(table, summary, index["profile"].iloc[0], index["run_id"].iloc[0])


def _fig4(index: pd.DataFrame) -> str:
    iou = run_table(index, "class_centers", "class_centers_iou")
    summary = run_table(index, "class_centers", "class_centers_summary").iloc[0]
    wide = iou.set_index("class_name")[["iou"]].T * 100
    wide.index = ["class centers"]
    lse = "n/a" if pd.isna(summary["lse_miou"]) else f"{100 * summary['lse_miou']:.1f}"
    return (
        _pct_grid(wide, "method")
        + f"\n\nmIoU: class centers {100 * summary['miou']:.1f}, LSE {lse} "
        f"({int(summary['n_images'])} images, resolution {int(summary['resolution'])})"
    )


def _fig9(index: pd.DataFrame) -> str:
    cos = run_table(index, "cosine_similarity", "cosine_similarity")
    order = list(dict.fromkeys(cos.sort_values("class_a_index")["class_a"]))
    wide = cos.pivot_table(index="class_a", columns="class_b", values="cosine", dropna=False).reindex(index=order, columns=order)
    matrix = wide.to_numpy()
    with np.errstate(invalid="ignore"):
        diag_max = sum(
            1 for i in range(len(order)) if np.isfinite(matrix[i, i]) and matrix[i, i] >= np.nanmax(matrix[i])
        )
    grid = "\n".join(
        ["| | " + " | ".join(order) + " |", "|---|" + "---|" * len(order)]
        + [f"| {a} | " + " | ".join("–" if pd.isna(v) else f"{v:.3f}" for v in wide.loc[a]) + " |" for a in order]
    )
    return grid + f"\n\nIntra-class similarity is the row maximum in {diag_max} of {len(order)} rows."


def _layerwise(index: pd.DataFrame) -> str:
    summary = run_table(index, "layerwise", "layerwise_summary").sort_values("layer_index")
    lines = ["| layer | name | mIoU (%) |", "|---|---|---|"]
    for r in summary.itertuples(index=False):
        lines.append(f"| {'Σ' if r.layer_index < 0 else r.layer_index} | {r.layer_name} | {100 * r.miou:.1f} |")
    return "\n".join(lines)


RENDERERS: dict[str, tuple[str, Callable[[pd.DataFrame], str]]] = {
    "table1": ("Table 1 — mIoU (%) of LSE / NSE-1 / NSE-2, bracket: relative to the best", _table1),
    "table2": ("Table 2 — few-shot LSE, mean ± max deviation and ratio to the full LSE", _table2),
    "table4": ("Tables 4/5 — category selection, both rounds", _table4),
    "table6": ("Table 6 — per-class IoU (%)", _table6),
    "fig4": ("Fig 4 / Sec 3.3 — nearest class-center segmentation, per-class IoU (%)", _fig4),
    "fig9": ("Fig 9 / Appx F — cosine similarity between class feature pools", _fig9),
    "layerwise": ("Appx I — layer-wise mIoU of an LSE trained with per-layer losses", _layerwise),
}


def render(name: str, results_root: str | None = None, profile: str | None = None) -> str:
    """A paper table of the newest run (of ``profile``), rendered from its Parquet files."""
    if name not in RENDERERS:
        raise LinearGanError(f"unknown paper table {name!r}", f"use one of: {', '.join(RENDERERS)}")
    title, fn = RENDERERS[name]
    index = latest_index(results_root, profile)
    return f"## {title}\n\n(profile {index['profile'].iloc[0]}, run {index['run_id'].iloc[0]})\n\n{fn(index)}\n"

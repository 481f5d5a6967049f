"""Paper-style tables rendered from result DataFrames: one renderer per paper table, no I/O.

Each renderer takes the tables one analysis wrote (name -> DataFrame, as read back from
Parquet) and returns markdown. The run's report, its Prefect artifacts and ``lineargan render``
all call these same functions, so the numbers a run prints and the numbers rendered later from
Parquet cannot disagree. Markdown grids come from ``DataFrame.to_markdown``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from lineargan.analyses.geometry import rows_intra_above_inter

EXTRACTOR_ORDER = ["LSE", "NSE-1", "NSE-2"]
Tables = Mapping[str, pd.DataFrame]


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage cell; "–" for a value that was never measured."""
    return "–" if x is None or pd.isna(x) else f"{100 * x:.{digits}f}"


def markdown_grid(df: pd.DataFrame, index_name: str | None = None) -> str:
    """``df`` as a GitHub markdown table (index as the first column), strings kept as is."""
    out = df.copy()
    if index_name is not None:
        out.index.name = index_name
    return out.to_markdown(tablefmt="github", disable_numparse=True)


def extractor_order(extractors) -> list[str]:
    order = {e: i for i, e in enumerate(EXTRACTOR_ORDER)}
    return sorted(dict.fromkeys(extractors), key=lambda e: order.get(e, len(order)))


def miou_from_rows(iou: pd.DataFrame) -> float:
    """mIoU of one fit's per-class rows: mean over the classes that counted (Appx A)."""
    return float(iou.loc[iou["images"] > 0, "iou"].mean())


# -- Table 1 and Table 6 -----------------------------------------------------------------------


METHOD_ORDER = ["schedule", "converged"]
METHOD_LABELS = {"schedule": "paper schedule", "converged": "converged"}


def with_method(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``method`` column (rows written before fits had methods: the schedule)."""
    if "method" in df:
        return df.assign(method=df["method"].fillna("schedule"))
    return df.assign(method="schedule")


def row_label(extractor: str, method: str) -> str:
    """A table row: "LSE (converged)", "NSE-2 (paper schedule)"."""
    return f"{extractor} ({METHOD_LABELS.get(method, method)})"


def sort_fits(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rows in paper order: method (schedule first), then extractor (LSE, NSE-1, NSE-2)."""
    order = {name: i for i, name in enumerate(EXTRACTOR_ORDER)}
    methods = {name: i for i, name in enumerate(METHOD_ORDER)}

    def key(s: pd.Series) -> pd.Series:
        if s.name == "extractor":
            return s.map(order)
        return s.map(methods) if s.name == "method" else s

    return df.sort_values(by, key=key).reset_index(drop=True)


def table1_summary(iou: pd.DataFrame) -> pd.DataFrame:
    """mIoU per (generator, segmenter, method, extractor) and the difference to the best.

    ``rel_diff`` is Appx D's (y_i − y*) / y* with y* the best mIoU of the same model pair
    under the same fit method (the paper's schedule and converged fits are separate rows).
    """
    counted = with_method(iou[iou["images"] > 0])
    group = ["generator", "segmenter", "method", "extractor", "fit_key"]
    summary = counted.groupby(group, as_index=False)["iou"].mean().rename(columns={"iou": "miou"})
    best = summary.groupby(["generator", "segmenter", "method"])["miou"].transform("max")
    summary["rel_diff"] = (summary["miou"] - best) / best
    return sort_fits(summary, ["generator", "segmenter", "method", "extractor"])


def _miou_cell(miou: float, rel: float) -> str:
    if pd.isna(miou):
        return "–"
    return f"**{pct(miou)}**" if rel == 0 else f"{pct(miou)} ({100 * rel:+.1f}%)"


def render_table1(tables: Tables) -> str:
    """Table 1: one row per (extractor, fit method), one column per model pair; the best of
    each method in bold, the others with their difference relative to it, all in percent."""
    summary = sort_fits(with_method(tables["table1"]), ["method", "extractor"])
    grid = _table1_grid(summary, "miou")
    first = summary.iloc[0]
    notes = (
        "Best of each fit method in bold; brackets: difference relative to it (Appx D). "
        "Paper schedule: Adam, Appx D's 50 epochs; converged: the LSE by L-BFGS to a certified "
        "optimum, the NSEs until their held-out loss stops improving (final loss: training "
        "loss for the LSE, held-out loss for the NSEs). "
        f"Training images: {int(first['n_train'])}, evaluation images: {int(first['n_eval'])}"
    )
    if "fallback_rate_train" in summary and not pd.isna(first["fallback_rate_train"]):
        notes += (
            f"; segmenter fallback rate (train/eval): {pct(first['fallback_rate_train'])}% / "
            f"{pct(first['fallback_rate_eval'])}%"
        )
    out = markdown_grid(grid, "extractor") + f"\n\n{notes}." + _certificates(summary)
    if _has(summary, "miou_detected"):
        out += (
            f"\n\n### On the {int(first['n_eval_detected'])} evaluation images where the "
            "segmenter's detector fired\n\n"
            + markdown_grid(_table1_grid(summary, "miou_detected"), "extractor")
        )
    return out


def _table1_grid(summary: pd.DataFrame, col: str) -> pd.DataFrame:
    """Table 1's grid of ``col`` (an mIoU column): rows = fits, columns = model pairs, the
    best of each (model pair, method) in bold and the rest relative to it."""
    df = summary.copy()
    best = df.groupby(["generator", "segmenter", "method"])[col].transform("max")
    df["rel_to_best"] = (df[col] - best) / best
    labels = zip(df["extractor"], df["method"], strict=True)
    rows = list(dict.fromkeys(row_label(e, m) for e, m in labels))
    cols = list(dict.fromkeys(zip(df["generator"], df["segmenter"], strict=True)))
    grid = pd.DataFrame(
        {
            f"{g} / {s}": {
                row_label(r.extractor, r.method): _miou_cell(getattr(r, col), r.rel_to_best)
                for r in df[(df.generator == g) & (df.segmenter == s)].itertuples()
            }
            for g, s in cols
        }
    )
    return grid.reindex(rows).fillna("–")


def _certificates(summary: pd.DataFrame) -> str:
    """The converged rows' stopping certificates, under Table 1."""
    conv = summary[summary["method"] == "converged"]
    if conv.empty or "grad_norm" not in conv:
        return ""
    grid = pd.DataFrame(
        {
            "stopping rule": [
                "L-BFGS certificate" if e == "LSE" else "held-out plateau"
                for e in conv["extractor"]
            ],
            "converged": ["yes" if c else "no (iteration cap)" for c in conv["converged"]],
            "iterations": [str(int(i)) for i in conv["iterations"]],
            "seconds": [f"{s:.0f}" for s in conv["train_seconds"]],
            "final loss": [f"{v:.5f}" for v in conv["final_loss"]],
            "‖∇‖∞": ["–" if pd.isna(v) else f"{v:.1e}" for v in conv["grad_norm"]],
        },
        index=[row_label(e, "converged") for e in conv["extractor"]],
    )
    return "\n\n" + markdown_grid(grid, "certificate")


def per_class_grid(iou: pd.DataFrame, row: str, value: str = "iou") -> pd.DataFrame:
    """Per-class IoU (%) with ``row`` values as rows and classes (segmenter order) as columns."""
    wide = iou.pivot_table(index=row, columns="class_index", values=value, sort=True) * 100
    names = iou.drop_duplicates("class_index").set_index("class_index")["class_name"]
    wide.columns = [names[c] for c in wide.columns]
    return wide.map(lambda v: "–" if pd.isna(v) else f"{v:.1f}")


def render_table6(tables: Tables) -> str:
    """Table 6: per-class IoU (%) of each fit (background ignored, Appx A)."""
    iou = sort_fits(with_method(tables["iou_per_class"]), ["method", "extractor"])
    iou["fit"] = [row_label(e, m) for e, m in zip(iou["extractor"], iou["method"], strict=True)]
    grid = per_class_grid(iou, "fit")
    return markdown_grid(grid.reindex(list(dict.fromkeys(iou["fit"]))), "extractor")


# -- Table 2 ---------------------------------------------------------------------------------------


def render_table2(tables: Tables) -> str:
    """Table 2: one row per (fit method, N), "mean ± max deviation" (%) and the ratio to the
    full LSE trained the same way."""
    summary = sort_fits(with_method(tables["fewshot_summary"]), ["method", "n_shot"])
    rows: dict[str, dict[str, str]] = {}
    for method, part in summary.groupby("method", sort=False):
        label = METHOD_LABELS.get(method, method)
        for r in part.itertuples(index=False):
            rows[f"{r.n_shot} ({label})"] = {
                "mIoU (%)": f"{pct(r.mean_miou)} ± {pct(r.max_dev)}",
                "of full LSE": "–" if pd.isna(r.ratio_to_full) else f"{pct(r.ratio_to_full)}%",
                "repeats": str(r.repeats),
                "detected only (%)": pct(getattr(r, "mean_miou_detected", None)),
            }
        ref = part["reference_miou"].iloc[0]
        rows[f"full ({label})"] = {
            "mIoU (%)": pct(ref),
            "of full LSE": "100%",
            "repeats": "–",
            "detected only (%)": "–",
        }
    grid = pd.DataFrame.from_dict(rows, orient="index")
    per = with_method(tables["fewshot_per_class"])
    per["fit"] = [
        f"{n} ({METHOD_LABELS.get(m, m)})"
        for n, m in zip(per["n_shot"], per["method"], strict=True)
    ]
    per = sort_fits(per, ["method", "n_shot"])
    per_class = per_class_grid(per, "fit").reindex(list(dict.fromkeys(per["fit"])))
    return (
        markdown_grid(grid, "N-shot")
        + "\n\nMean ± maximum deviation over repeats with disjoint training images; last "
        "column: mean relative to the full LSE trained the same way (paper schedule: Adam for "
        "the paper's iterations; converged: L-BFGS to the optimum, few-shot fits with a small "
        "ridge penalty). Detected only: the mean mIoU on the evaluation images where the "
        "segmenter's detector fired (the others are labelled from a fallback box)."
        "\n\n### Per-class IoU (%), mean over repeats\n\n" + markdown_grid(per_class, "N-shot")
    )


def _has(df: pd.DataFrame, column: str) -> bool:
    """Whether ``df`` has ``column`` with a value (parts written before it existed have none)."""
    return column in df and bool(df[column].notna().any())


# -- Tables 4 and 5 ------------------------------------------------------------------------------


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
                r.extractor: _miou_cell(r.miou, r.rel_diff)
                for r in summary[summary["round"] == rnd].itertuples()
            }
            for rnd, label in (("all", "trained on all classes"), ("selected", "retrained"))
        }
    ).reindex(extractors)
    if _has(summary, "miou_detected"):
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


# -- Fig 4: class centers ------------------------------------------------------------------------


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


# -- Fig 9: cosine similarity -----------------------------------------------------------------


def cosine_matrix(sim: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The class × class matrix of a ``cosine_similarity`` table, in class-index order."""
    k = int(sim["class_a_index"].max()) + 1
    matrix = np.full((k, k), np.nan)
    matrix[sim["class_a_index"].to_numpy(), sim["class_b_index"].to_numpy()] = sim["cosine"]
    names = sim.drop_duplicates("class_a_index").sort_values("class_a_index")["class_a"]
    return matrix, list(names)


def render_fig9(tables: Tables) -> str:
    """Appx F / Fig 9: the matrix (diagonal in bold), the intra > inter count, pool sizes."""
    matrix, names = cosine_matrix(tables["cosine_similarity"])
    pools = tables["cosine_pools"].sort_values("class_index")
    cells = [
        [
            "–" if not np.isfinite(v) else (f"**{v:.3f}**" if a == b else f"{v:.3f}")
            for b, v in enumerate(row)
        ]
        for a, row in enumerate(matrix)
    ]
    wins, total = rows_intra_above_inter(matrix)
    first = pools.iloc[0]
    pool_grid = pd.DataFrame(
        {
            "vectors in pool": pools["n_vectors"].astype(str).to_numpy(),
            "reached T2": np.where(pools["reached_t2"], "yes", "no"),
        },
        index=pools["class_name"].to_numpy(),
    )
    short = list(pools.loc[~pools["reached_t2"], "class_name"])
    return "\n".join(
        [
            markdown_grid(pd.DataFrame(cells, index=names, columns=names), "class"),
            "",
            f"Intra > inter: in {wins} of {total} rows the diagonal (intra-class) is the row "
            "maximum (rows of empty pools not counted).",
            "",
            f"cos(A, B) = mean of all |A|·|B| pairwise cosines = ā·b̄ (exact); the diagonal "
            f"includes the i = j pairs. Unit feature vectors of all layers at "
            f"{int(first['resolution'])}². Fair sampling (Algorithm 1) with T1 = {first['t1']}, "
            f"T2 = {first['t2']} (paper: 200, 4000) over the {first['split']} store: "
            f"{int(first['n_images_visited'])} of {int(first['n_store'])} images visited.",
            "",
            markdown_grid(pool_grid, "class"),
        ]
        + ([f"\nPools below T2 (store exhausted first): {', '.join(short)}."] if short else [])
    )


# -- Table 3 (SCS) and Fig 5 (SIE) ------------------------------------------------------------


def _predictor_label(predictor: str, n_shot) -> str:
    return f"{int(n_shot)}-shot LSE" if predictor == "LSE" and not pd.isna(n_shot) else predictor


def render_table3(tables: Tables) -> str:
    """Table 3: SCS agreement with the targets (%), "mean ± max deviation" over repeats, per
    few-shot N and for the baseline; both aggregations (Eq. 7 and the authors' pooled one)."""
    summary = tables["scs_summary"].copy()
    summary["order"] = [
        (1, 0) if p != "LSE" else (0, int(n))
        for p, n in zip(summary["predictor"], summary["n_shot"], strict=True)
    ]
    summary = summary.sort_values("order")
    headline = summary["headline"].iloc[0]
    grid = pd.DataFrame(
        {
            "agreement, Eq. 7 (%)": [
                f"{pct(a)} ± {pct(d)}"
                for a, d in zip(summary["agreement"], summary["max_dev"], strict=True)
            ],
            "pooled, authors (%)": [
                f"{pct(a)} ± {pct(d)}"
                for a, d in zip(summary["pooled"], summary["pooled_max_dev"], strict=True)
            ],
            "initial candidate (%)": [pct(v) for v in summary["agreement_initial"]],
            "repeats": summary["repeats"].astype(str).to_numpy(),
            "pairs": summary["pairs"].astype(str).to_numpy(),
        },
        index=[
            f"SCS ({_predictor_label(p, n)})"
            for p, n in zip(summary["predictor"], summary["n_shot"], strict=True)
        ],
    )
    samples = tables["scs_samples"]
    first = samples.iloc[0]
    return (
        markdown_grid(grid, "P") + f"\n\nProtocol `{first['protocol']}` (headline: "
        f"{'Eq. 7, the mean of per-pair mIoU' if headline == 'paper' else 'pooled per class over pairs'})"
        f"; {samples['target'].nunique()} targets × {samples['sample'].nunique()} samples, "
        f"{int(first['n_init'])} candidates each; agreement scored by the reference segmenter. "
        "Initial candidate: the agreement of the chosen starting image before optimisation."
    )


def render_sie(tables: Tables) -> str:
    """Fig 5 in numbers: per method, agreement of the edited image with the target inside and
    outside the edited region, and the mean pixel change in each."""
    summary = tables["sie_summary"]
    summary = summary[summary["op"] == "all"]
    index = [
        "colour edit" if m == "colour" else f"SIE ({_predictor_label(p, n)})"
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


# -- Appx I: layer-wise ------------------------------------------------------------------------


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
    if _has(summary, "miou_detected"):
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


# -- Baseline segmenter (SCS / SIE) ------------------------------------------------------------


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
    )

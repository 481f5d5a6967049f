"""The renderer of Fig 9 (cosine similarity): markdown from the analysis's tables, no I/O."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lineargan.analyses.geometry import rows_intra_above_inter
from lineargan.render import Tables, markdown_grid


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

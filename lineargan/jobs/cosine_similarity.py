"""Cosine similarity of categories (Appx F, Algorithm 1, Fig 9).

Fair sampling (Algorithm 1) over the cached store instead of fresh G samples: images are
visited in a seeded random order (chunks in a random order, images in a random order within
each chunk, so only one chunk is in memory); for each visited image and each class k whose
pool holds fewer than T2 vectors and which has at least T1 pixels in the image (at the sampling
resolution), T1 of those pixels are drawn without replacement and their unit feature vectors
(:mod:`lineargan.geometry`) join pool k. Sampling stops when every pool holds T2 vectors or the
store is exhausted; a class that never reaches T2 is reported with its count (0 if no image
ever had T1 pixels of it), never dropped silently. Every class, background included, has a
pool (Algorithm 1 loops over all M classes of P).

cos(A, B) is the mean of the |A|×|B| matrix of pairwise cosines, which equals ā·b̄ exactly
(:func:`lineargan.geometry.pool_cosine_matrix`): only each pool's sum and count are kept, and
no T2×T2 matrix is built. The intra-class value (diagonal) is the mean over all pairs of the
pool with itself, the i = j pairs included — the mean of the full T2×T2 matrix.

T1/T2. The paper uses T1 = 200, T2 = 4000 on 1024² images (``paper`` profile defaults). At the
embedded DCGAN's 32×32 feature resolution an image has 1,024 pixels; measured on its store
(dlib labels, medians per image): background ≈ 490, skin ≈ 480, nose ≈ 21, lips ≈ 15,
eyebrows ≈ 10, eyes ≈ 6, mouth ≈ 3 pixels. With T1 = 200 only background and skin ever qualify
(the other pools stay at 0, as the report then shows), and T1 = 20 still excludes eyebrows,
eyes and mouth. T1 = 5 qualifies ≥ 90% of images for eyebrows/eyes/nose/lips and ≈ 40% for
mouth, so ``smoke`` uses T1 = 5, T2 = 100 (20 images per pool, like the paper's T2/T1 = 20;
reachable for every class within the 96-image smoke store) and ``quick`` T1 = 5, T2 = 400
(80 images per pool; mouth needs ≈ 200 of the 2,048 quick images).

Tables (each part keyed by the analysis key; every row also carries ``profile``, ``run_id``,
``code_version``, ``created_at``):

- ``cosine_similarity`` (long): generator, segmenter, analysis_key, split, class_a_index,
  class_a, class_b_index, class_b, cosine (NaN where a pool is empty), t1, t2, resolution.
- ``cosine_pools``: generator, segmenter, analysis_key, split, class_index, class_name,
  n_vectors (final pool size), reached_t2, n_images_visited (images visited before sampling
  stopped, the same for every class), n_store (images in the store), t1, t2, resolution.

Figure ``cosine-<profile>-<key8>.png``: the matrix as a heatmap with values and class names.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, PositiveInt, model_validator

from lineargan.config import Frozen, get_profile
from lineargan.device import resolve_device
from lineargan.figures import heatmap
from lineargan.geometry import (
    MAX_BATCH,
    FairSampler,
    feature_dim,
    labels_at,
    pool_cosine_matrix,
    resolve_resolution,
    rows_intra_above_inter,
    unit_pixel_features,
)
from lineargan.jobs.analysis import (
    AnalysisContext,
    AnalysisResult,
    analysis_key,
    figure_name,
    load_finished,
    save_finished,
)
from lineargan.jobs.models import limit_torch_threads
from storage.feature_store import FeatureStore
from storage.layout import write_figure
from storage.tables import run_metadata, write_table_part

NAME = "cosine_similarity"
SIM_TABLE = "cosine_similarity"
POOLS_TABLE = "cosine_pools"

_PROFILE_T = {"paper": (200, 4000), "quick": (5, 400), "smoke": (5, 100)}


class CosineSimilarityParams(Frozen):
    """Algorithm 1's thresholds (paper: T1 = 200, T2 = 4000) and where to sample."""

    t1: PositiveInt = 200
    t2: PositiveInt = 4000
    resolution: PositiveInt | None = None  # None: the largest feature-map resolution
    split: Literal["train", "eval"] = "train"
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> CosineSimilarityParams:
        if self.t2 < self.t1 or self.t2 % self.t1:
            raise ValueError(f"t2 ({self.t2}) must be a multiple of t1 ({self.t1})")
        return self

    @classmethod
    def for_profile(cls, profile: str) -> CosineSimilarityParams:
        get_profile(profile)
        t1, t2 = _PROFILE_T.get(profile, (200, 4000))
        return cls(t1=t1, t2=t2)


@torch.no_grad()
def fair_sample(
    store: FeatureStore, t1: int, t2: int, size: int, seed: int, device: torch.device
) -> FairSampler:
    """Run Algorithm 1 over ``store``; the returned sampler holds each pool's sum and count.

    Labels decide what is drawn, so a chunk's features are read only when one of its images
    contributes, and unit features are computed for ≤ 8 contributing images at a time.
    """
    spec = store.spec
    sampler = FairSampler(len(spec.class_names), t1, t2, seed=seed)
    order = np.random.default_rng([seed, 1])  # visiting order, independent of the pixel draws
    for i in order.permutation(spec.n_chunks):
        if sampler.done:
            break
        labels = labels_at(store.read_chunk(int(i), features=False).labels, size).numpy()
        plans: list[tuple[int, dict[int, np.ndarray]]] = []
        for j in order.permutation(len(labels)):
            if sampler.done:
                break
            drawn = sampler.plan(labels[j])
            if drawn:
                plans.append((int(j), drawn))
        if not plans:
            continue
        feats = store.read_chunk(int(i), features=True).features
        for s in range(0, len(plans), MAX_BATCH):
            batch = plans[s : s + MAX_BATCH]
            idx = [j for j, _ in batch]
            unit = unit_pixel_features([f[idx] for f in feats], size, device)
            for u, (_, drawn) in zip(unit, batch, strict=True):
                sampler.accumulate(u, drawn)
    return sampler


def run_cosine_similarity(ctx: AnalysisContext, params: CosineSimilarityParams) -> AnalysisResult:
    """Fig 9: fair pools per class, then the matrix of mean pairwise cosines."""
    key = analysis_key(NAME, params, ctx)
    if (done := load_finished(ctx, NAME, key)) is not None:
        return done
    limit_torch_threads()
    store = ctx.train_store() if params.split == "train" else ctx.eval_store()
    spec = store.spec
    size = resolve_resolution(spec.layer_shapes, spec.resolution, params.resolution)
    dev = resolve_device(ctx.device)

    sampler = fair_sample(store, params.t1, params.t2, size, params.seed, dev)
    means, counts = sampler.means(feature_dim(spec.layer_shapes))
    matrix = pool_cosine_matrix(means)
    names = list(spec.class_names)
    k = len(names)

    meta = run_metadata(ctx.profile, ctx.run_id)
    base = {
        "generator": spec.generator,
        "segmenter": spec.segmenter,
        "analysis_key": key,
        "split": params.split,
    }
    sizes = {"t1": params.t1, "t2": params.t2, "resolution": size}
    ia, ib = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    sim = pd.DataFrame(
        {
            **base,
            "class_a_index": ia.ravel(),
            "class_a": [names[a] for a in ia.ravel()],
            "class_b_index": ib.ravel(),
            "class_b": [names[b] for b in ib.ravel()],
            "cosine": matrix.ravel(),
            **sizes,
            **meta,
        }
    )
    pools = pd.DataFrame(
        {
            **base,
            "class_index": range(k),
            "class_name": names,
            "n_vectors": counts,
            "reached_t2": counts >= params.t2,
            "n_images_visited": sampler.images_visited,
            "n_store": spec.n,
            **sizes,
            **meta,
        }
    )
    tables = {
        SIM_TABLE: write_table_part(ctx.results_root, SIM_TABLE, key, sim),
        POOLS_TABLE: write_table_part(ctx.results_root, POOLS_TABLE, key, pools),
    }
    image = heatmap(matrix, names, title=f"cosine similarity ({ctx.profile})")
    figure = write_figure(ctx.results_root, figure_name("cosine", ctx, key), image)
    md = render_markdown(matrix, names, pools, params, size, ctx, figure)
    return save_finished(
        ctx, AnalysisResult(name=NAME, key=key, tables=tables, figures=[figure], markdown=md)
    )


def render_markdown(
    matrix: np.ndarray,
    names: list[str],
    pools: pd.DataFrame,
    params: CosineSimilarityParams,
    size: int,
    ctx: AnalysisContext,
    figure: str,
) -> str:
    """The matrix (diagonal in bold), the intra > inter count and the pool sizes."""
    wins, total = rows_intra_above_inter(matrix)
    lines = [
        f"## Fig 9 (Appx F) — cosine similarity between categories (profile `{ctx.profile}`, "
        f"run `{ctx.run_id}`)",
        "",
        "| class | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for a, name in enumerate(names):
        cells = []
        for b in range(len(names)):
            v = matrix[a, b]
            cell = "–" if not np.isfinite(v) else f"{v:.3f}"
            cells.append(f"**{cell}**" if a == b and np.isfinite(v) else cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    visited = int(pools["n_images_visited"].iloc[0])
    n_store = int(pools["n_store"].iloc[0])
    lines += [
        "",
        f"Intra > inter: in {wins} of {total} rows the diagonal (intra-class) is the row maximum"
        " (rows of empty pools not counted).",
        "",
        f"cos(A, B) = mean of all |A|·|B| pairwise cosines = ā·b̄ (exact); the diagonal includes"
        f" the i = j pairs. Unit feature vectors of all layers at {size}×{size}. Fair sampling"
        f" (Algorithm 1) with T1 = {params.t1}, T2 = {params.t2} (paper: 200, 4000) over the "
        f"{params.split} store: {visited} of {n_store} images visited.",
        "",
        "| class | vectors in pool | reached T2 |",
        "|---|---|---|",
    ]
    for row in pools.itertuples(index=False):
        lines.append(
            f"| {row.class_name} | {row.n_vectors} | {'yes' if row.reached_t2 else 'no'} |"
        )
    short = [r.class_name for r in pools.itertuples(index=False) if not r.reached_t2]
    if short:
        lines.append(f"\nPools below T2 (store exhausted before they filled): {', '.join(short)}.")
    lines.append(f"\nFigure: `{figure}`")
    return "\n".join(lines) + "\n"

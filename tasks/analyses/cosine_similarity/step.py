"""Cosine similarity of categories (Appx F, Algorithm 1, Fig 9).

Fair sampling (Algorithm 1) over the cached store instead of fresh G samples: images are
visited in a seeded random order (chunks in a random order, images in a random order within
each chunk, so only one chunk is in memory); for each visited image and each class k whose
pool holds fewer than T2 vectors and which has at least T1 pixels in the image (at the sampling
resolution), T1 of those pixels are drawn without replacement and their unit feature vectors
(:mod:`lineargan.analyses.geometry`) join pool k. Sampling stops when every pool holds T2 vectors or the
store is exhausted; a class that never reaches T2 is reported with its count (0 if no image
ever had T1 pixels of it), never dropped silently. Every class, background included, has a
pool (Algorithm 1 loops over all M classes of P).

cos(A, B) is the mean of the |A|×|B| matrix of pairwise cosines, which equals ā·b̄ exactly
(:func:`lineargan.analyses.geometry.pool_cosine_matrix`): only each pool's sum and count are kept, and
no T2×T2 matrix is built. The intra-class value (diagonal) is the mean over all pairs of the
pool with itself, the i = j pairs included — the mean of the full T2×T2 matrix.

T1/T2. The paper uses T1 = 200, T2 = 4000 on 1024² images (``paper`` profile defaults). At the
embedded DCGAN's 32×32 feature resolution an image has 1,024 pixels; measured on its store
(dlib labels, medians per image): background ≈ 490, skin ≈ 480, nose ≈ 21, lips ≈ 15,
eyebrows ≈ 10, eyes ≈ 6, mouth ≈ 3 pixels. With T1 = 200 only background and skin ever qualify
(the other pools stay at 0, as the report then shows), and T1 = 20 still excludes eyebrows,
eyes and mouth. T1 = 5 qualifies ≥ 90% of images for eyebrows/eyes/nose/lips and ≈ 40% for
mouth, so ``smoke`` uses T1 = 5, T2 = 100 (20 images per pool, like the paper's T2/T1 = 20;
reachable for every class within the 96-image smoke store) and so does ``quick``: T2 follows
T1 at the paper's ratio unless it is given (``--set cosine_similarity.t2=400`` for larger pools).

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

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from lineargan.analyses.geometry import (
    MAX_BATCH,
    FairSampler,
    feature_dim,
    labels_at,
    pool_cosine_matrix,
    resolve_resolution,
    unit_pixel_features,
)
from lineargan.device import resolve_device
from lineargan.figures import heatmap
from storage.feature_store import FeatureStore
from storage.tables import MODELS, schema
from tasks.analyses.contract import Inputs, Output
from tasks.analyses.cosine_similarity.science import CosineSimilarityParams
from tasks.run_context import RunContext

SIM_TABLE = "cosine_similarity"
POOLS_TABLE = "cosine_pools"

_BASE = {
    **MODELS,
    "analysis_key": pa.string(),
    "split": pa.string(),
}
_SIZES = {"t1": pa.int64(), "t2": pa.int64(), "resolution": pa.int64()}
TABLES = {
    SIM_TABLE: schema(
        **_BASE,
        class_a_index=pa.int64(),
        class_a=pa.string(),
        class_b_index=pa.int64(),
        class_b=pa.string(),
        cosine=pa.float64(),
        **_SIZES,
    ),
    POOLS_TABLE: schema(
        **_BASE,
        class_index=pa.int64(),
        class_name=pa.string(),
        n_vectors=pa.int64(),
        reached_t2=pa.bool_(),
        n_images_visited=pa.int64(),
        n_store=pa.int64(),
        **_SIZES,
    ),
}


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


def compute(ctx: RunContext, params: CosineSimilarityParams, inputs: Inputs) -> Output:
    """Fig 9: fair pools per class, then the matrix of mean pairwise cosines."""
    store = inputs.train if params.split == "train" else inputs.evals
    spec = store.spec
    size = resolve_resolution(spec.layer_shapes, spec.resolution, params.resolution)
    dev = resolve_device(ctx.device)

    sampler = fair_sample(store, params.t1, params.pool_size, size, params.seed, dev)
    means, counts = sampler.means(feature_dim(spec.layer_shapes))
    matrix = pool_cosine_matrix(means)
    names = list(spec.class_names)
    k = len(names)

    base = {
        "generator": spec.generator,
        "segmenter": spec.segmenter,
        "split": params.split,
    }
    sizes = {"t1": params.t1, "t2": params.pool_size, "resolution": size}
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
        }
    )
    pools = pd.DataFrame(
        {
            **base,
            "class_index": range(k),
            "class_name": names,
            "n_vectors": counts,
            "reached_t2": counts >= params.pool_size,
            "n_images_visited": sampler.images_visited,
            "n_store": spec.n,
            **sizes,
        }
    )
    image = heatmap(matrix, names, title=f"cosine similarity ({ctx.profile})")
    return Output(tables={SIM_TABLE: sim, POOLS_TABLE: pools}, figures={"cosine": image})

"""Cosine similarity (Appx F): the exact mean-pairwise identity, Algorithm 1's pool counts, and
the analysis on small real stores (checked against brute-force T×T matrices of its own pools)."""

from __future__ import annotations

import io

import numpy as np
import pydantic
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lineargan.analyses.geometry import (
    FairSampler,
    pairwise_mean_cosine,
    pool_cosine_matrix,
    rows_intra_above_inter,
)
from lineargan.config import RunConfig
from storage.feature_store import FeatureStore
from storage.tables import read_table_part
from storage.target import Target
from tasks.analyses.cosine_similarity import step as cs
from tasks.analyses.cosine_similarity.step import (
    CosineSimilarityParams,
    fair_sample,
)
from tasks.analyses.runner import run_and_finish

# -- the identity mean_{i,j} a_i·b_j = ā·b̄ --------------------------------------------------------


def test_mean_of_pairwise_cosines_equals_dot_of_means():
    rng = np.random.default_rng(0)
    pools = [rng.normal(size=(t, 24)) + shift for t, shift in [(50, 0.0), (70, 0.5), (30, -0.2)]]
    units = [p / np.linalg.norm(p, axis=1, keepdims=True) for p in pools]
    matrix = pool_cosine_matrix(np.stack([u.mean(0) for u in units]))
    for a in range(3):
        for b in range(3):
            brute = float((units[a] @ units[b].T).mean())  # the full T_a×T_b matrix, i=j included
            assert matrix[a, b] == pytest.approx(brute, abs=1e-6)
            assert pairwise_mean_cosine(pools[a], pools[b]) == pytest.approx(brute, abs=1e-12)
    assert np.allclose(matrix, matrix.T)


def test_intra_above_inter_counts_rows_whose_diagonal_is_the_maximum():
    m = np.array([[0.9, 0.2, np.nan], [0.5, 0.4, np.nan], [np.nan, np.nan, np.nan]])
    assert rows_intra_above_inter(m) == (1, 2)


# -- Algorithm 1 ---------------------------------------------------------------------------------


def _labels(i: int) -> np.ndarray:
    """8×8 map: class 1 has 20 pixels, class 2 has 3 (< T1), class 3 has 10 in every 4th image."""
    lab = np.zeros(64, np.uint8)
    lab[:20] = 1
    lab[20:23] = 2
    if i % 4 == 0:
        lab[30:40] = 3
    return lab.reshape(8, 8)


def _run(sampler: FairSampler, n_images: int) -> None:
    for i in range(n_images):
        if sampler.done:
            break
        sampler.plan(_labels(i))


def test_fair_sampler_pool_counts():
    s = FairSampler(n_class=4, t1=5, t2=20, seed=0)
    _run(s, 100)
    assert s.counts.tolist() == [20, 20, 0, 20]  # class 2 never has T1 pixels: empty pool
    assert all(c % 5 == 0 and c <= 20 for c in s.counts)
    assert s.images_visited == 100 and not s.done  # store exhausted, class 2 unfilled
    short = FairSampler(n_class=4, t1=5, t2=20, seed=0)
    _run(short, 10)  # class 3 only qualified in images 0, 4, 8
    assert short.counts.tolist() == [20, 20, 0, 15]


def test_fair_sampler_stops_when_every_pool_is_full():
    s = FairSampler(n_class=2, t1=5, t2=20, seed=0)
    _run(s, 100)
    assert s.done and s.counts.tolist() == [20, 20] and s.images_visited == 4


def test_fair_sampler_draws_distinct_pixels_of_the_class():
    """With one-hot pixel features (feature p = e_p) the pool sum shows which pixels were drawn."""
    s = FairSampler(n_class=4, t1=5, t2=20, seed=3)
    lab = _labels(0)
    drawn = s.plan(lab)
    assert sorted(drawn) == [0, 1, 3]
    unit = torch.eye(64).reshape(64, 8, 8)
    s.accumulate(unit, drawn)
    for k in drawn:
        picked = np.flatnonzero(s.sums[k].numpy())
        assert len(picked) == 5 and (s.sums[k][picked] == 1).all()  # without replacement
        assert (lab.reshape(-1)[picked] == k).all()
    means, counts = s.means()
    assert counts.tolist() == [5, 5, 0, 5] and np.isnan(means[2]).all()


def test_fair_sampler_refuses_unaccumulated_draws():
    s = FairSampler(n_class=4, t1=5, t2=20)
    s.plan(_labels(0))
    with pytest.raises(RuntimeError, match="never accumulated"):
        s.means(64)


def test_params_validate_thresholds_and_scale_by_profile():
    with pytest.raises(pydantic.ValidationError, match="multiple"):
        CosineSimilarityParams(t1=30, t2=100)
    assert CosineSimilarityParams.for_run(RunConfig(profile="paper")) == CosineSimilarityParams()
    assert (CosineSimilarityParams().t1, CosineSimilarityParams().pool_size) == (200, 4000)
    for profile in ("smoke", "quick"):  # a lowered T1 keeps the paper's T2 = 20·T1
        low = CosineSimilarityParams.for_run(RunConfig(profile=profile))
        assert low.t1 < 200 and low.pool_size == 20 * low.t1
    assert CosineSimilarityParams(t1=5, t2=400).pool_size == 400  # unless T2 is given


# -- on the real stores --------------------------------------------------------------------------


def test_large_t1_leaves_small_classes_empty_and_exhausts_the_store(train_store_url):
    store = FeatureStore.open(Target(train_store_url))
    s = fair_sample(store, t1=100, t2=200, size=32, seed=0, device=torch.device("cpu"))
    names = list(store.spec.class_names)
    counts = dict(zip(names, s.counts.tolist(), strict=True))
    assert counts["background"] == 200 and counts["skin"] == 200
    assert counts["eyes"] == 0 and counts["mouth"] == 0  # never 100 pixels at 32×32
    assert s.images_visited == store.spec.n
    again = fair_sample(store, t1=100, t2=200, size=32, seed=0, device=torch.device("cpu"))
    assert torch.equal(again.sums, s.sums)  # seeded: deterministic


class RecordingSampler(FairSampler):
    """Keeps the drawn vectors too, so the test can build the brute-force T×T matrices."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.pools: dict[int, list[torch.Tensor]] = {}

    def accumulate(self, unit, drawn) -> None:
        super().accumulate(unit, drawn)
        x = unit.reshape(unit.shape[0], -1)
        for k, pix in drawn.items():
            self.pools.setdefault(k, []).append(x[:, torch.as_tensor(pix)].T.double())


def test_cosine_similarity_on_real_stores_and_resume(ctx, monkeypatch):
    recorded: list[RecordingSampler] = []

    def recording(*a, **k):
        recorded.append(RecordingSampler(*a, **k))
        return recorded[-1]

    monkeypatch.setattr(cs, "FairSampler", recording)
    params = CosineSimilarityParams(t1=5, t2=30, seed=7)
    result = run_and_finish("cosine_similarity", ctx, params)
    assert not result.reused and set(result.tables) == {"cosine_similarity", "cosine_pools"}

    sim = read_table_part(ctx.results_root, "cosine_similarity", result.key)
    pools = read_table_part(ctx.results_root, "cosine_pools", result.key)
    names = list(pools["class_name"])
    k = len(names)
    assert len(sim) == k * k and (sim["run_id"] == "test-run").all()
    matrix = sim.pivot(index="class_a_index", columns="class_b_index", values="cosine").to_numpy()
    assert np.allclose(matrix, matrix.T, equal_nan=True)

    # Pool sizes: multiples of T1, at most T2; sampling stops as soon as all pools are full.
    n = pools["n_vectors"].to_numpy()
    assert ((n % 5 == 0) & (n <= 30)).all()
    assert (pools["reached_t2"] == (n == 30)).all()
    visited = int(pools["n_images_visited"].iloc[0])
    assert 6 <= visited <= 64
    assert pools["reached_t2"].all() or visited == 64
    assert pools.loc[pools.class_name == "skin", "reached_t2"].item()

    # The stored matrix equals the mean of the brute-force T×T cosine matrices of the pools.
    sampler = recorded[0]
    for a in range(k):
        for b in range(k):
            if n[a] == 0 or n[b] == 0:
                assert np.isnan(matrix[a, b])
                continue
            pa, pb = torch.cat(sampler.pools[a]), torch.cat(sampler.pools[b])
            assert len(pa) == n[a]
            brute = (F.normalize(pa, dim=1) @ F.normalize(pb, dim=1).T).mean().item()
            assert matrix[a, b] == pytest.approx(brute, abs=1e-6)
    assert all(-1 <= v <= 1 + 1e-9 for v in matrix[np.isfinite(matrix)])

    wins, total = rows_intra_above_inter(matrix)
    assert f"in {wins} of {total} rows" in result.markdown
    png = Image.open(io.BytesIO(Target(result.figures[0]).read_bytes()))
    assert result.figures[0].endswith(f"cosine-smoke-{result.key[:8]}.png") and png.width > 7 * 40

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(cs, "fair_sample", boom)
    again = run_and_finish("cosine_similarity", ctx, params)
    assert again.reused and again.key == result.key and again.markdown == result.markdown

"""Store policies: what a store keeps of the features, its size estimate and budget, and the
same results whether features are stored or regenerated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lineargan.config import DatasetConfig, FitConfig, Schedule
from lineargan.errors import FingerprintMismatchError, LinearGanError
from lineargan.store_policy import StorePolicy, with_policy
from storage.target import Target
from tasks.cache import build_store, compute_chunk, prepare_store, size_stores
from tasks.evaluate import evaluate_fit
from tasks.feature_source import FeatureSource
from tasks.fit import fit_extractor
from tasks.store_models import store_generator

N, CHUNK = 32, 16
# 32 × (4 layers of float16 features + latent + image + label) bytes, before compression
STORE_BYTES = 8_401_440


def dataset(
    split: str = "train", seed: int = 0, precision: str = "float32", **policy
) -> DatasetConfig:
    return DatasetConfig(
        split=split,
        seed=seed,
        n=N,
        chunk_size=CHUNK,
        store_policy=StorePolicy(**policy),
        generator_precision=precision,
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Train and eval stores of the same seeds under three policies."""
    root = str(tmp_path_factory.mktemp("policy-data"))
    policies = {
        "all": {},
        "regenerate": {"features": "regenerate"},
        "capped-subset": {"layers": ("block1_8x8", "block3_32x32"), "max_resolution": 16},
    }
    return {
        name: {
            split: build_store(dataset(split, seed, **p), root, device="cpu")
            for split, seed in (("train", 0), ("eval", 1))
        }
        for name, p in policies.items()
    }


def test_policy_serves_chosen_layers_capped():
    policy = StorePolicy(layers=("b", "c"), max_resolution=16)
    names, shapes = policy.served(["a", "b", "c"], [(8, 4, 4), (4, 8, 8), (2, 32, 32)])
    assert names == ["b", "c"] and shapes == [(4, 8, 8), (2, 16, 16)]
    x = torch.arange(32.0 * 32).reshape(1, 1, 32, 32)
    (capped,) = policy.cap([x])
    assert capped.shape == (1, 1, 16, 16)
    assert capped[0, 0, 0, 0] == x[0, 0, :2, :2].mean()  # area average of its footprint
    with pytest.raises(LinearGanError, match="does not have"):
        StorePolicy(layers=("nope",)).served(["a"], [(1, 1, 1)])


def test_default_policy_leaves_the_store_identity_alone():
    assert StorePolicy().identity() == {} and DatasetConfig().store_variant == ""
    assert StorePolicy(budget_gb=1.0).identity() == {}  # the budget only guards the run
    assert dataset(features="regenerate").store_variant != ""


def test_storage_alone_never_runs_the_generator(stores):
    """The storage layer serves a regenerate-policy store's bytes (labels, latents, images) but
    refuses to make features: the generator runs only in tasks.feature_source, above it."""
    from storage.feature_store import FeatureStore

    store = FeatureStore.open(Target(stores["regenerate"]["train"]))
    assert store.read_chunk(0, features=False).labels.shape[0] == store.spec.chunk_size
    with pytest.raises(TypeError, match="tasks.feature_source.FeatureSource"):
        store.read_chunk(0)


def test_regenerated_features_equal_stored_ones(stores):
    stored = FeatureSource.open(Target(stores["all"]["train"]))
    regen = FeatureSource.open(Target(stores["regenerate"]["train"]))
    assert "block0_4x4" not in regen.group["features"]  # nothing written
    for i in range(stored.spec.n_chunks):
        a, b = stored.read_chunk(i), regen.read_chunk(i)
        np.testing.assert_array_equal(a.labels, b.labels)
        for fa, fb in zip(a.features, b.features, strict=True):
            assert fa.dtype == fb.dtype == np.float16
            np.testing.assert_array_equal(fa, fb)


def test_capped_subset_store_serves_what_the_live_generator_gives(stores):
    store = FeatureSource.open(Target(stores["capped-subset"]["train"]))
    assert store.spec.layer_names == ("block1_8x8", "block3_32x32")
    assert store.spec.layer_shapes == ((256, 8, 8), (64, 16, 16))
    g = store_generator(store, "cpu")  # what SCS/SIE call: the same served features
    chunk = store.read_chunk(0)
    with torch.inference_mode():
        live = g(torch.from_numpy(chunk.latents)).features
    for stored, f in zip(chunk.features, live, strict=True):
        np.testing.assert_array_equal(stored, f.to(torch.float16).numpy())


def test_fit_and_evaluation_identical_under_all_and_regenerate(stores, tmp_path):
    cfg = FitConfig(extractor="LSE", schedule=Schedule(phases=((2, 4),), samples_per_epoch=16))
    rows = {}
    weights = {}
    for name in ("all", "regenerate"):
        meta = fit_extractor(stores[name]["train"], cfg, str(tmp_path), "cpu")
        frame = evaluate_fit(meta, stores[name]["eval"], str(tmp_path), "smoke", "r", "cpu")["all"]
        rows[name] = frame.sort_values("class_name")[["class_name", "iou"]].reset_index(drop=True)
        weights[name] = (tmp_path / meta["fit_dir"]).as_posix()
    assert weights["all"] != weights["regenerate"]  # two fits, not one reused
    assert rows["all"].equals(rows["regenerate"])


def test_sefa_measures_the_same_directions_under_every_policy(stores, tmp_path):
    """SeFa labelled by an LSE fitted on each policy's store: the generator seen through the
    policy serves the LSE exactly the features it was fitted on, so "all" and "regenerate"
    measure the same numbers and a capped layer subset runs too."""
    from tasks.analyses.runner import run_and_finish
    from tasks.analyses.sefa.science import SefaParams
    from tasks.analyses.sefa.step import SEMANTICS_TABLE
    from tasks.run_context import RunContext

    cfg = FitConfig(extractor="LSE", schedule=Schedule(phases=((2, 4),), samples_per_epoch=16))
    params = SefaParams(n_directions=1, alphas=(-3, 0, 3), n_samples=2, reference=False, lse=cfg)
    rows = {}
    for name, urls in stores.items():
        root = str(tmp_path / name)
        ctx = RunContext(urls["train"], urls["eval"], root, "smoke", "r", "cpu")
        result = run_and_finish("sefa", ctx, params)
        frame = pd.read_parquet(result.tables[SEMANTICS_TABLE])
        cols = ["direction", "alpha", "class_index", "area_before", "area_after", "changed"]
        rows[name] = frame.sort_values(cols[:3])[cols].reset_index(drop=True)
        assert (frame[frame.alpha == 0].changed == 0).all() and len(frame) == 3 * 7
    pd.testing.assert_frame_equal(rows["all"], rows["regenerate"])


def test_size_is_printed_and_a_store_over_budget_refused(tmp_path, capsys):
    root = str(tmp_path / "data")
    with pytest.raises(
        LinearGanError, match=r"8.4 MB, over the budget.*regenerate\"\} 0.5 MB\), a layer"
    ):
        size_stores([dataset(budget_gb=1e-3)], root)
    assert "4 feature layers, about 8.4 MB uncompressed (budget 1.0 MB)" in capsys.readouterr().out
    assert not Target(root).fs.glob(f"{root}/stores/*/*.zarr")  # nothing written
    assert size_stores([dataset(budget_gb=1e-3, allow_over_budget=True)], root) == STORE_BYTES
    url, pending, total = prepare_store(dataset(budget_gb=1e-3, allow_over_budget=True), root)
    assert len(pending) == total == 2
    # labels + latents only: the same store without features is small enough
    size_stores([dataset(budget_gb=1e-3, features="regenerate")], root)


def test_a_runs_stores_are_refused_together_over_the_free_space(tmp_path, monkeypatch, capsys):
    """Train and eval stores that each fit the disk but not both: refused before anything is
    written; a resumed store counts only its missing chunks."""
    import shutil
    from collections import namedtuple

    root = str(tmp_path / "data")
    usage = namedtuple("usage", "total used free")
    free = {"bytes": 10_000_000}  # 90 %: 9.0 MB, one 8.4 MB store fits, two do not
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(0, 0, free["bytes"]))
    train, evaluation = dataset("train", 0), dataset("eval", 1)
    with pytest.raises(LinearGanError, match=r"16.8 MB \(train 8.4 MB, eval 8.4 MB\), over"):
        size_stores([train, evaluation], root)
    assert not Target(root).fs.glob(f"{root}/stores/*/*.zarr")
    assert size_stores([train], root) == STORE_BYTES  # alone it fits
    url, _, _ = prepare_store(train, root)  # created, no chunk computed yet
    store = FeatureSource.open(Target(url))
    store.write_chunk(0, compute_chunk(store, 0, "cpu"))
    # half of train is written: 4.2 + 8.4 MB still to go, over the 9.0 MB budget
    with pytest.raises(LinearGanError, match=r"12.6 MB \(train 4.2 MB, eval 8.4 MB\)"):
        size_stores([train, evaluation], root)
    assert "resuming, 1 of 2 chunks to go" in capsys.readouterr().out
    free["bytes"] = 15_000_000  # 13.5 MB budget
    assert size_stores([train, evaluation], root) == STORE_BYTES * 3 // 2
    # a store allowed over budget is written anyway: the others must fit in what it leaves
    allowed = dataset("eval", 1, allow_over_budget=True)
    assert size_stores([train, allowed], root) == STORE_BYTES * 3 // 2  # 4.2 ≤ 13.5 - 8.4
    free["bytes"] = 10_000_000
    with pytest.raises(LinearGanError, match="8.4 MB of it taken by stores allowed over"):
        size_stores([train, allowed], root)  # 4.2 > 9.0 - 8.4
    # a store at the same path made for another dataset is refused before anything is written
    other = train.model_copy(update={"chunk_size": 8})
    with pytest.raises(FingerprintMismatchError, match="made for a different dataset"):
        size_stores([evaluation, other], root)
    assert len(Target(root).fs.glob(f"{root}/stores/*/*.zarr")) == 1


def test_with_policy_is_identity_for_the_default(generator):
    assert with_policy(generator, StorePolicy()) is generator


def test_bfloat16_generator_regenerates_what_it_stored(tmp_path):
    root = str(tmp_path / "data")
    urls = {
        (precision, kind): build_store(dataset(precision=precision, **policy), root, "cpu")
        for precision in ("float32", "bfloat16")
        for kind, policy in (("stored", {}), ("regen", {"features": "regenerate"}))
    }
    assert len(set(urls.values())) == 4  # four stores side by side
    read = {k: FeatureSource.open(Target(u)).read_chunk(0).features for k, u in urls.items()}
    for a, b in zip(read["bfloat16", "stored"], read["bfloat16", "regen"], strict=True):
        np.testing.assert_array_equal(a, b)
    # and bfloat16 is really used: its features differ from float32's, if only a little
    deep32, deep16 = read["float32", "stored"][-1], read["bfloat16", "stored"][-1]
    assert not np.array_equal(deep32, deep16)
    np.testing.assert_allclose(deep16, deep32, atol=0.1 * float(np.abs(deep32).max()))


def test_micro_batched_generation_regenerates_the_same_features(tmp_path, monkeypatch):
    import lineargan.cache
    import tasks.store_models

    for module in (lineargan.cache, tasks.store_models):  # 16-sample chunks in calls of 5
        monkeypatch.setattr(module, "generator_batch", lambda resolution: 5)
    root = str(tmp_path / "data")
    stored = build_store(dataset(), root, "cpu")
    regen = build_store(dataset(features="regenerate"), root, "cpu")
    a = FeatureSource.open(Target(stored)).read_chunk(1)
    b = FeatureSource.open(Target(regen)).read_chunk(1)
    np.testing.assert_array_equal(a.labels, b.labels)
    for fa, fb in zip(a.features, b.features, strict=True):
        np.testing.assert_array_equal(fa, fb)


def test_generator_batch_shrinks_with_resolution():
    from lineargan.cache import generator_batch

    assert generator_batch(64) >= 64 and generator_batch(256) == 16 and generator_batch(1024) == 1


def test_a_store_relabelled_by_other_segmenter_weights_is_refused(stores, monkeypatch):
    import tasks.store_models as sm

    store = FeatureSource.open(Target(stores["all"]["train"]))
    real = sm.store_segmenter(store)

    class Retrained:
        class_names = real.class_names
        weights_sha256 = "0" * 64

    monkeypatch.setattr(sm, "cached_segmenter", lambda *a: Retrained())
    with pytest.raises(FingerprintMismatchError, match="other dlib-face68 weights"):
        sm.store_segmenter(store)


def test_runtime_options_leave_the_store_identity_alone():
    base = dict(segmenter="face-parser-unet", segmenter_checkpoint="face.pth")
    plain = DatasetConfig(**base, segmenter_options={"input_size": 256})
    runtime = DatasetConfig(**base, segmenter_options={"input_size": 256, "device": "cpu"})
    other = DatasetConfig(**base, segmenter_options={"input_size": 512})
    assert plain.store_variant == runtime.store_variant != other.store_variant


def test_random_noise_cannot_be_regenerated():
    with pytest.raises(LinearGanError, match="randomize_noise"):
        DatasetConfig(
            generator="stylegan2-genforce",
            generator_checkpoint="g.pth",
            generator_options={"randomize_noise": True},
            store_policy=StorePolicy(features="regenerate"),
        )


@pytest.mark.slow
def test_every_analysis_runs_on_a_capped_layer_subset_store(tmp_path):
    """The smoke reproduce with every analysis on a store that keeps three of the four DCGAN
    layers, capped at 16 px: each experiment sees only the served features."""
    from flows.reproduce import reproduce
    from lineargan.config import RunConfig

    config = RunConfig(
        profile="smoke",
        store_policy=StorePolicy(
            layers=("block1_8x8", "block2_16x16", "block3_32x32"), max_resolution=16
        ),
        fit_methods=("schedule",),
        data_root=str(tmp_path / "data"),
        results_root=str(tmp_path / "results"),
        n_workers=1,
    )
    out = reproduce(config)
    index = pd.read_parquet(tmp_path / "results" / "tables" / "results_index")
    assert {"table1", "fewshot", "layerwise", "class_centers", "scs", "sie", "sefa"} <= set(
        index.experiment
    )
    layers = pd.read_parquet(tmp_path / "results" / "tables" / "layerwise")
    assert set(layers.layer_name) == {"block1_8x8", "block2_16x16", "block3_32x32", "all"}
    assert out["results_root"] == str(tmp_path / "results")


def test_an_lse_from_a_policy_store_reads_a_raw_generator_through_that_policy(
    stores, tmp_path, generator
):
    from storage.checkpoints import load_extractor
    from tasks.editing import load_lse

    cfg = FitConfig(extractor="LSE", schedule=Schedule(phases=((1, 4),), samples_per_epoch=8))
    meta = fit_extractor(stores["capped-subset"]["train"], cfg, str(tmp_path), "cpu")
    predictor, _ = load_lse(meta["fit_dir"], generator)  # the raw, uncapped DCGAN
    model, _ = load_extractor(meta["fit_dir"], torch.device("cpu"))
    chunk = FeatureSource.open(Target(stores["capped-subset"]["train"])).read_chunk(0)
    with torch.no_grad():
        live = predictor(generator(torch.from_numpy(chunk.latents)), 64)
        stored = model([torch.from_numpy(f).float() for f in chunk.features], 64)
    torch.testing.assert_close(live, stored, atol=2e-2, rtol=0)

"""Object storage end to end: stores, fits and tables on ``s3://`` (a local moto server), with
the cache and fit stages running on a Dask cluster of separate scheduler and worker processes.

Everything binds to 127.0.0.1; every process is started here and stopped by PID.
"""

from __future__ import annotations

import os
import re
import sys

import fsspec
import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from lineargan.errors import LinearGanError
from tests.e2e_helpers import isolated_env, run_module
from tests.s3_cluster_helpers import (
    BUCKET,
    s3_env,
    start_moto,
    start_prefect_server,
    start_scheduler,
    start_worker,
    stop,
    storage_options,
    wait_for_workers,
)

# One worker process beside the scheduler: a second only adds import time and memory on a
# 2-core machine (the fits take seconds each).
WORKERS = 1

pytest.importorskip("s3fs", reason="the s3 extra (pip install 'lineargan[s3]') is not installed")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server with an empty bucket; this process's environment points at it."""
    tmp = tmp_path_factory.mktemp("s3")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    moto, endpoint = start_moto({**base, **s3_env("", tmp)}, tmp / "moto.log")
    env = s3_env(endpoint, tmp)
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
    os.environ.update(env)
    try:
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(BUCKET)
        yield endpoint, env
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        stop(moto)


def test_a_missing_s3fs_is_a_one_line_error_naming_the_extra(monkeypatch):
    from fsspec.registry import _registry

    from storage.target import Target

    monkeypatch.delitem(_registry, "s3", raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs now raises ImportError
    with pytest.raises(LinearGanError) as err:
        Target("s3://bucket/results").ensure_writable()
    message = str(err.value)
    assert "\n" not in message and "pip install 'lineargan[s3]'" in message, message


def test_checkpoints_partial_fits_and_tables_round_trip_on_s3(s3):
    from lineargan.extractors import build_extractor
    from storage.checkpoints import PartialFit, is_finished, load_extractor, save_extractor
    from storage.tables import PartialUnits, read_table, write_table_part

    root = f"s3://{BUCKET}/unit"
    fit_dir = f"{root}/fits/lse-0123"
    model = build_extractor("LSE", n_class=3, dims=[4, 2])
    assert not is_finished(fit_dir)
    save_extractor(model, fit_dir, metadata={"fit_key": "0123"})
    assert is_finished(fit_dir)
    back, meta = load_extractor(fit_dir)
    assert meta == {"fit_key": "0123"}
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    fs = fsspec.filesystem("s3")
    # one PUT per file on an object store: no temporary objects left beside the checkpoint
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(fit_dir, refresh=True)) == [
        "config.json",
        "weights.safetensors",
    ]

    partial = PartialFit(fit_dir)
    assert partial.load() is None and partial.path == f"{fit_dir}/partial/state.pt"
    partial.save({"iteration": 5, "model": {"w": torch.arange(3.0)}})
    state = partial.load()
    assert state["iteration"] == 5 and torch.equal(state["model"]["w"], torch.arange(3.0))
    fs.pipe_file(f"{fit_dir}/partial/state.pt", b"not a torch file")
    assert partial.load() is None  # unreadable: the fit starts over
    partial.clear()
    fs.invalidate_cache()
    assert not fs.exists(f"{fit_dir}/partial")

    df = pd.DataFrame({"a": [1, 2]})
    write_table_part(root, "demo", "k1", df)
    write_table_part(root, "demo", "k2", df.assign(a=[3, 4]))
    assert sorted(read_table(root, "demo").a) == [1, 2, 3, 4]
    units = PartialUnits(root, "work-1")
    rows, seconds = units.load_or_compute("u", lambda: df)
    assert seconds is not None and units.load_or_compute("u", lambda: df)[1] is None
    units.clear()
    assert units.load("u") is None


def test_missing_chunk_objects_on_s3_are_refused_reported_and_rewritten(s3, train_store_url):
    """On object storage too, a lost chunk object of labels, images, latents or a feature
    layer is a CorruptChunkError (never zeros), verify reports each, and after --repair the
    cache stage rewrites them to the original bytes."""
    from lineargan.errors import CorruptChunkError
    from storage.feature_store import FeatureStore
    from storage.layout import dataset_store
    from storage.target import Target
    from tasks.cache import fill_chunk, finalize_store, prepare_store
    from tests.conftest import small_dataset
    from tests.test_feature_store import CHUNK_OBJECTS, assert_same_data

    data_root = f"s3://{BUCKET}/missing-chunks"
    cfg = small_dataset("train", 0)
    url = dataset_store(data_root, cfg).url
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.put(train_store_url.rstrip("/") + "/", url.removeprefix("s3://"), recursive=True)

    def read_all() -> dict[str, np.ndarray]:
        g = zarr.open_group(url, mode="r")
        names = ["latents", "images", "labels", "detected", "features/block3_32x32"]
        return {name: g[name][:] for name in names}

    clean = read_all()
    for i, key in enumerate(CHUNK_OBJECTS.values()):  # chunk i loses one object each
        fs.rm(f"{url.removeprefix('s3://')}/{key.format(i=i)}")
    fs.invalidate_cache()
    store = FeatureStore.open(Target(url))
    for i, array in enumerate(CHUNK_OBJECTS):
        with pytest.raises(CorruptChunkError, match=f"{array} .*no chunk object"):
            store.read_chunk(i, images=True)
    assert store.verify(repair=True) == [0, 1, 2, 3]

    assert prepare_store(cfg, data_root)[1] == [0, 1, 2, 3]
    assert [fill_chunk(url, i, "cpu") for i in range(4)] == [True] * 4
    finalize_store(url)
    assert FeatureStore.open(Target(url), require_complete=True).verify() == []
    assert_same_data(read_all(), clean)


def _fit_objects(endpoint: str) -> dict[str, str]:
    """Every object under the fits prefix with its ETag (changes whenever it is rewritten)."""
    fs = fsspec.filesystem("s3", **storage_options(endpoint))
    return {
        path: info["ETag"] + str(info["LastModified"])
        for path, info in fs.find(f"{BUCKET}/results/fits", detail=True).items()
    }


def test_table1_on_s3_with_a_dask_cluster_then_a_rerun_reuses_everything(s3, tmp_path):
    endpoint, aws = s3
    env = {**isolated_env(tmp_path), **aws, "LINEARGAN_TORCH_THREADS": "1"}
    data, results = f"s3://{BUCKET}/data", f"s3://{BUCKET}/results"
    procs = []
    try:
        scheduler, address = start_scheduler(env, tmp_path / "scheduler.log")
        procs.append(scheduler)
        server, api = start_prefect_server(env, tmp_path / "prefect-server.log")
        procs.append(server)
        env["PREFECT_API_URL"] = api
        for i in range(WORKERS):
            procs.append(start_worker(address, env, tmp_path / f"worker{i}.log"))
        wait_for_workers(address, WORKERS, procs)
        args = [
            "--profile", "smoke", "--n-train", "64", "--n-eval", "32",
            "--extractors", '["LSE", "NSE-1"]', "--fit-methods", '["schedule"]',
            "--analyses", "[]",
            "--data-root", data, "--results-root", results, "--dask-address", address,
        ]  # fmt: skip
        first = run_module("flows.reproduce", args, env, timeout=300)
        out = first.stdout + first.stderr
        (tmp_path / "run1.log").write_text(out)
        assert first.returncode == 0, out[-3000:]
        assert "computed 3 chunks, 0 already done" in out, out[-3000:]

        # the tables read back with pandas from the bucket, from outside the run's environment
        opts = storage_options(endpoint)
        t1 = pd.read_parquet(f"{results}/tables/table1", storage_options=opts)
        assert sorted(t1.extractor) == ["LSE", "NSE-1"] and t1.miou.between(0, 1).all()
        assert (t1.n_train == 64).all() and (t1.n_eval == 32).all()
        # each store is a complete Zarr store in the bucket
        stores = f"{data}/stores/dcgan-digiface__dlib-face68"
        for name, n in (("train-seed0-n64", 64), ("eval-seed1-n32", 32)):
            group = zarr.open_group(f"{stores}/{name}.zarr", mode="r", storage_options=opts)
            assert group.attrs["complete"] is True and np.all(group["chunk_done"][:] == 1)
            assert group["images"].shape[0] == n and group["labels"][:].any()
        # the fits are checkpoints in the bucket, trained on the workers (not in the flow)
        fits = _fit_objects(endpoint)
        checkpoints = [p for p in fits if "/snapshots/" not in p]
        assert {p.rsplit("/", 1)[-1] for p in checkpoints} == {"config.json", "weights.safetensors"}
        assert len(checkpoints) == 4
        # beside them, in the bucket too, the snapshots Fig 8 scores (steps 1, 2, 4, ...)
        snapshots = [p.rsplit("/", 1)[-1] for p in fits if "/snapshots/" in p]
        assert "iteration-00000001.safetensors" in snapshots
        assert all(re.fullmatch(r"iteration-\d{8}\.safetensors", name) for name in snapshots)
        worker_logs = "".join((tmp_path / f"worker{i}.log").read_text() for i in range(WORKERS))
        assert re.search(r"LSE trained \(s3://", worker_logs), worker_logs[-3000:]
        assert re.search(r"NSE-1 trained \(s3://", worker_logs), worker_logs[-3000:]
        assert (
            len(re.findall(r"Task run 'chunk-\d+' - Finished in state Completed", worker_logs)) == 3
        )
        index = pd.read_parquet(f"{results}/tables/results_index", storage_options=opts)
        assert all(p.startswith(f"{results}/") for p in index.path), list(index.path)
        # nothing went to the local default roots
        assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()

        second = run_module("flows.reproduce", args, env, timeout=300)
        out2 = second.stdout + second.stderr
        (tmp_path / "run2.log").write_text(out2)
        assert second.returncode == 0, out2[-3000:]
        assert "computed 0 chunks, 3 already done" in out2, out2[-3000:]
        worker_logs = "".join((tmp_path / f"worker{i}.log").read_text() for i in range(WORKERS))
        assert re.search(r"LSE reused \(s3://", worker_logs), worker_logs[-3000:]
        assert re.search(r"NSE-1 reused \(s3://", worker_logs), worker_logs[-3000:]
        assert _fit_objects(endpoint) == fits  # no checkpoint was rewritten
        t1_again = pd.read_parquet(f"{results}/tables/table1", storage_options=opts)
        assert len(t1_again) == len(t1)  # the same unit replaced, not duplicated
        assert (
            t1_again.set_index("extractor").miou.to_dict()
            == t1.set_index("extractor").miou.to_dict()
        )
        index = pd.read_parquet(f"{results}/tables/results_index", storage_options=opts)
        assert index.run_id.nunique() == 2
    finally:
        for proc in reversed(procs):
            stop(proc)

"""Labelled synthetic datasets (``flows.export``): the real DCGAN draws the images, LSEs
fitted on the small real store label them, and the export is read back the way a user
without this project reads it (pandas + Pillow, Hugging Face ``datasets``)."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import time
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lineargan.cache import render_images
from lineargan.config import FitConfig, Schedule
from lineargan.synthetic import (
    ExportConfig,
    class_areas,
    confidence,
    ensemble_uncertainty,
    keep_most_confident,
    latent_seed,
    mean_interval,
    repeat_siblings,
)
from storage.checkpoints import load_extractor
from storage.dataset_export import INDEX
from storage.target import Target
from tasks.export import export_shard, prepare_export, read_latents, run_export
from tasks.feature_source import FeatureSource
from tasks.fit import FitJob, fit_or_reuse
from tests.e2e_helpers import ROOT, isolated_env, kill_command, run_module, start_module

REPEATS = 3


# -- the science on hand-made numbers ----------------------------------------------------------


def test_confidence_measures_run_from_certain_to_uniform():
    sure = torch.zeros(1, 4, 2, 2)
    sure[:, 2] = 1
    uniform = torch.full((1, 4, 2, 2), 0.25)
    probs = torch.cat([sure, uniform])
    assert confidence(probs, "max_softmax").tolist() == pytest.approx([1.0, 0.25])
    assert confidence(probs, "entropy").tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_ensemble_uncertainty_is_the_jensen_shannon_divergence_of_the_members():
    a = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    b = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    assert ensemble_uncertainty([a, a]).item() == pytest.approx(0.0, abs=1e-6)
    # two certain members that disagree: H(mean) = log 2, members' entropies 0
    assert ensemble_uncertainty([a, b]).item() == pytest.approx(math.log(2), rel=1e-5)


def test_keep_most_confident_keeps_the_top_fraction_and_the_threshold():
    conf = np.array([0.5, 0.9, 0.7, 0.9, 0.1])
    assert keep_most_confident(conf, 0.4).tolist() == [False, True, False, True, False]
    assert keep_most_confident(conf, 0.6).tolist() == [False, True, True, True, False]
    assert keep_most_confident(conf, 1.0, minimum=0.6).tolist() == [False, True, True, True, False]
    assert keep_most_confident(conf).all()


def test_class_areas_are_pixel_fractions():
    labels = np.array([[[0, 0], [1, 2]], [[2, 2], [2, 2]]], np.uint8)
    assert class_areas(labels, 4).tolist() == [[0.5, 0.25, 0.25, 0.0], [0.0, 0.0, 1.0, 0.0]]


def test_mean_interval_is_the_t_interval_of_the_repeats():
    mean, half = mean_interval(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(mean_interval(np.array([0.5]))[1])


def test_repeat_siblings_and_latent_seeds():
    names = [
        "fewshot-n8-r0-converged-ridge1e-03-0123456789abcdef",
        "fewshot-n8-r1-converged-ridge1e-03-fedcba9876543210",
        "fewshot-n8-r1-converged-ridge1e-02-fedcba9876543211",
        "fewshot-n16-r0-converged-ridge1e-03-0123456789abcdee",
        "lse-converged-0123456789abcdef",
    ]
    assert repeat_siblings(names[0], names) == names[:2]
    assert repeat_siblings(names[4], names) == [names[4]]
    seeds = {latent_seed(s, i) for s in range(3) for i in range(1000)}
    assert len(seeds) == 3000 and all(0 <= s < 2**63 for s in seeds)
    assert latent_seed(0, 5) == latent_seed(0, 5)


# -- exports of the real generator, labelled by real fits ---------------------------------------


@pytest.fixture(scope="module")
def fits(tmp_path_factory, train_store_url) -> str:
    """A results root holding REPEATS few-shot-named LSEs (different seeds and samples) fitted
    on the small real store, in seconds; returns the results root."""
    root = str(tmp_path_factory.mktemp("export-results"))
    store = FeatureSource.open(Target(train_store_url), require_complete=True)
    schedule = Schedule(phases=((40, 4),), samples_per_epoch=16)
    for k in range(REPEATS):
        job = FitJob(
            cfg=FitConfig(extractor="LSE", schedule=schedule, seed=k),
            prefix=f"fewshot-n16-r{k}",
            class_names=store.spec.class_names,
            key_extra={"repeat": k},
        )
        fit_or_reuse(store, train_store_url, job, root, device="cpu")
    return root


def config(fits: str, out: Path, **kw) -> ExportConfig:
    base = {"fit": "fewshot-n16-r0", "n_images": 40, "shard_size": 16, "device": "cpu"}
    return ExportConfig(results_root=fits, out=str(out), **{**base, **kw})


def test_export_is_read_by_pandas_pillow_and_datasets(fits, tmp_path, generator):
    out = tmp_path / "export"
    summary = run_export(config(fits, out, keep_fraction=0.5))
    assert summary["images"] == 40 and summary["shards"] == 3 and summary["kept"] == 20
    index = pd.read_parquet(out / INDEX)
    assert index.id.tolist() == list(range(40)) and index.shard.tolist() == [
        i // 16 for i in range(40)
    ]
    classes = json.loads((out / "classes.json").read_text())["classes"]
    names = [c["name"] for c in classes]
    assert names == list(generator_classes(fits))
    n_class = len(names)
    for row in index.itertuples():
        image = Image.open(out / row.file_name)
        mask = Image.open(out / row.mask_file_name)
        assert image.mode == "RGB" and image.size == (64, 64) and mask.mode == "P"
        labels = np.array(mask)
        assert labels.max() < n_class
        areas = [getattr(row, f"area_{c}") for c in names]
        assert areas == pytest.approx(class_areas(labels[None], n_class)[0].tolist())
    # each image is its latent's: the latent comes from its seed alone, the PNG from the latent
    latents = np.concatenate([read_latents(str(out), s) for s in range(3)])
    for i in (0, 17, 39):
        z = generator.sample_latents(1, int(index.latent_seed[i]))
        assert np.array_equal(z.numpy()[0], latents[i])
        again = render_images(generator, z, 1)[0].astype(int)
        assert np.abs(again - np.array(Image.open(out / index.file_name[i]))).max() <= 1

    import datasets  # the test extra installs it

    ds = datasets.load_dataset(
        "imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert len(ds) == 40 and {"image", "mask", "confidence", "kept", "latent_seed"} <= set(
        ds.features
    )
    first = ds.sort("id")[5]
    assert np.array_equal(
        np.array(first["mask"]), np.array(Image.open(out / index.mask_file_name[5]))
    )
    assert sum(ds["kept"]) == 20


def generator_classes(results_root: str) -> tuple[str, ...]:
    fit_dir = next((Path(results_root) / "fits").glob("fewshot-n16-r0-*"))
    return tuple(load_extractor(fit_dir)[1]["class_names"])


def test_confidence_is_the_fits_softmax_and_the_filter_keeps_the_most_confident(
    fits, tmp_path, generator
):
    out = tmp_path / "export"
    run_export(config(fits, out, n_images=24, keep_fraction=0.25, confidence="entropy"))
    index = pd.read_parquet(out / INDEX)
    kept = index[index.kept]
    assert len(kept) == 6 and kept.confidence.min() >= index[~index.kept].confidence.max()
    # the recorded confidence is the fit's: 1 - mean pixel entropy / log C of its softmax
    model, _ = load_extractor(next((Path(fits) / "fits").glob("fewshot-n16-r0-*")))
    z = torch.from_numpy(read_latents(str(out), 0)[:3])
    with torch.no_grad():
        feats = [f.half().float() for f in generator(z).features]
        probs = model(feats, 64).softmax(1)
    assert index.confidence[:3].tolist() == pytest.approx(
        confidence(probs, "entropy").tolist(), abs=1e-4
    )
    assert index.confidence.std() > 0  # the measure tells images apart
    # a threshold on top of the fraction
    floor = float(index.confidence.median())
    run_export(config(fits, out, n_images=24, confidence="entropy", min_confidence=floor))
    again = pd.read_parquet(out / INDEX)
    assert again.kept.tolist() == (again.confidence >= floor).tolist()


def test_the_ensemble_measure_uses_the_fits_repeats(fits, tmp_path):
    out = tmp_path / "export"
    run_export(config(fits, out, n_images=16, confidence="ensemble"))
    spec = json.loads((out / "export.json").read_text())
    assert [m.split("-r")[1][0] for m in spec["ensemble"]] == ["1", "2"]
    index = pd.read_parquet(out / INDEX)
    assert (index.uncertainty > 0).all()
    assert index.confidence.tolist() == pytest.approx(
        (1 - index.uncertainty / math.log(REPEATS)).tolist()
    )


def _files(root: Path, shard: int) -> dict[str, tuple[int, bytes]]:
    files = [
        *(root / "data" / f"shard-{shard:05d}").rglob("*"),
        root / "parts" / f"shard-{shard:05d}.parquet",
    ]
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in files if p.is_file()}


def test_a_killed_export_resumes_without_rewriting_finished_shards(fits, tmp_path):
    out = tmp_path / "export"
    cfg = config(fits, out, n_images=40)
    root, pending = prepare_export(cfg)
    assert pending == [0, 1, 2]
    export_shard(cfg, root, 0)
    export_shard(cfg, root, 1)
    # the kill: shard 1 was being written (its part and some images not yet there), shard 2
    # had not started
    (out / "parts" / "shard-00001.parquet").unlink()
    for p in sorted((out / "data" / "shard-00001" / "images").glob("*.png"))[8:]:
        p.unlink()
    before = _files(out, 0)
    assert prepare_export(cfg)[1] == [1, 2]
    summary = run_export(cfg)
    assert summary["written"] == 2 and summary["images"] == 40
    assert _files(out, 0) == before  # same bytes, never rewritten (same mtimes)
    first_index = pd.read_parquet(out / INDEX)
    assert len(list((out / "data" / "shard-00001" / "images").glob("*.png"))) == 16

    # the same export from scratch holds the same data
    fresh = tmp_path / "fresh"
    run_export(config(fits, fresh, n_images=40))
    pd.testing.assert_frame_equal(first_index, pd.read_parquet(fresh / INDEX))
    for name in ("images/00000020.png", "masks/00000020.png"):
        assert (out / "data/shard-00001" / name).read_bytes() == (
            fresh / "data/shard-00001" / name
        ).read_bytes()

    # extending it: shards 0-1 stay, the short last shard (8 images) is completed, one added
    kept = {**_files(out, 0), **_files(out, 1)}
    summary = run_export(config(fits, out, n_images=64))
    assert summary["written"] == 2 and summary["images"] == 64
    assert {**_files(out, 0), **_files(out, 1)} == kept
    assert (
        pd.read_parquet(out / INDEX)
        .iloc[:40]
        .drop(columns="kept")
        .equals(first_index.drop(columns="kept"))
    )


@pytest.mark.slow
def test_a_sigkilled_export_command_resumes_to_the_same_export(fits, tmp_path):
    """``python -m flows.export`` killed with SIGKILL (the command, its temporary Prefect server
    and its Dask workers at once) once some shards are finished: the rerun keeps those
    shards' files byte for byte, writes the rest, leaves no temporary file of a killed write,
    and ends with the export an uninterrupted run makes."""
    out = tmp_path / "export"
    n, shard_size = 160, 8
    args = ["--fit", "fewshot-n16-r0", "--n-images", str(n), "--shard-size", str(shard_size),
            "--out", str(out), "--results-root", fits, "--device", "cpu", "--n-workers", "1"]  # fmt: skip
    env = isolated_env(tmp_path)
    log = tmp_path / "export.log"
    proc = start_module("flows.export", args, env, log)
    parts = out / "parts"
    deadline = time.monotonic() + 300
    while len(list(parts.glob("*.parquet"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)
    kill_command(proc)
    finished = sorted(int(p.stem.removeprefix("shard-")) for p in parts.glob("*.parquet"))
    assert len(finished) < n // shard_size, "the export finished before the kill"
    kept = {k: v for s in finished for k, v in _files(out, s).items()}

    rerun = run_module("flows.export", args, env)
    said = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, said[-3000:]
    assert f"{len(finished)} already done; {n} images" in said, said[-3000:]
    assert {k: v for s in finished for k, v in _files(out, s).items()} == kept
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]

    fresh = tmp_path / "fresh"
    run_export(config(fits, fresh, n_images=n, shard_size=shard_size))
    pd.testing.assert_frame_equal(pd.read_parquet(out / INDEX), pd.read_parquet(fresh / INDEX))
    listing = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert listing == sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*") if p.is_file())
    for name in listing:
        if name.endswith(".png") or name.endswith(".npy"):
            assert (out / name).read_bytes() == (fresh / name).read_bytes(), name


def test_a_rewritten_shard_first_deletes_a_killed_writers_temporaries(fits, tmp_path):
    out = tmp_path / "export"
    cfg = config(fits, out, n_images=16)
    root, _ = prepare_export(cfg)
    images = out / "data" / "shard-00000" / "images"
    images.mkdir(parents=True)
    stale = [images / "00000003.png.tmp-0a1b", out / "parts" / "shard-00000.parquet.tmp-9f"]
    stale[1].parent.mkdir(exist_ok=True)
    for path in stale:
        path.write_bytes(b"half a file")
    assert export_shard(cfg, root, 0)
    assert not any(path.exists() for path in stale)
    assert len(list(images.glob("*.png"))) == 16


# -- the command line ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--fit", "nosuch", "--n-images", "4"], "no fit 'nosuch' under"),
        (["--fit", "fewshot-n16-r0", "--n-images", "0"], "invalid parameter n_images"),
        (
            ["--fit", "fewshot-n16-r0", "--n-images", "4", "--out", "/proc/nope"],
            "cannot write to /proc/nope",
        ),
        (["--fit", "fewshot-n16-r", "--n-images", "4"], "3 fits under"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_prefect_starts(fits, tmp_path, args, needle):
    env = isolated_env(tmp_path)
    proc = run_module("flows.export", [*args, "--results-root", fits], env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Fix:" in lines[0], proc.stderr[-2000:]
    assert "Prefect" not in proc.stdout + proc.stderr  # no server, no flow run


@pytest.mark.slow
def test_the_deployment_exports_to_s3(fits, tmp_path):
    """The user's deployment path: a Prefect server, a process worker, ``prefect deploy
    --all`` and ``prefect deployment run export/default`` with the config as a parameter:
    the Dask workers write the shards to the local S3 server (moto), pandas + Pillow read the
    index, images and masks back from there, and a second run finds every shard finished."""
    pytest.importorskip("s3fs")
    from tests.s3_cluster_helpers import (
        BIN,
        BUCKET,
        s3_env,
        start,
        start_moto,
        start_prefect_server,
        stop,
        storage_options,
    )

    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    moto, endpoint = start_moto({**base, **s3_env("", tmp_path)}, tmp_path / "moto.log")
    procs = [moto]
    try:
        fsspec.filesystem("s3", **storage_options(endpoint)).mkdir(BUCKET)
        env = {k: v for k, v in isolated_env(tmp_path).items() if not k.startswith("AWS_")}
        env.update(s3_env(endpoint, tmp_path), LINEARGAN_PROJECT_DIR=str(ROOT))
        server, api = start_prefect_server(env, tmp_path / "server.log")
        procs.append(server)
        env["PREFECT_API_URL"] = api

        def prefect(*args: str) -> subprocess.CompletedProcess:
            cmd = [str(BIN / "prefect"), "--no-prompt", *args]
            return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

        pool = ["work-pool", "create", "lineargan-process", "--type", "process", "--overwrite"]
        assert prefect(*pool).returncode == 0
        deployed = prefect("deploy", "--all")
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        worker_cmd = [str(BIN / "prefect"), "worker", "start", "--pool", "lineargan-process"]
        procs.append(start([*worker_cmd, "--type", "process"], env, tmp_path / "worker.log"))
        url = f"s3://{BUCKET}/exports/deployed"
        cfg = {"fit": "fewshot-n16-r0", "n_images": 12, "shard_size": 8, "out": url}
        cfg.update(results_root=fits, device="cpu")
        param = f"config={json.dumps(cfg)}"
        for done in (0, 2):  # the second run finds both shards finished
            run = prefect("deployment", "run", "export/default", "--param", param, "--watch")
            assert run.returncode == 0 and "Completed" in run.stdout, (
                run.stdout[-3000:] + run.stderr[-2000:]
            )
            log = (tmp_path / "worker.log").read_text()
            assert f"export: wrote {2 - done} shards, {done} already done; 12 images" in log
        options = storage_options(endpoint)
        index = pd.read_parquet(f"{url}/{INDEX}", storage_options=options)
        assert index.id.tolist() == list(range(12)) and set(index.shard) == {0, 1}
        fs = fsspec.filesystem("s3", **options)
        image = Image.open(io.BytesIO(fs.cat(f"{url}/{index.file_name[11]}")))
        mask = Image.open(io.BytesIO(fs.cat(f"{url}/{index.mask_file_name[11]}")))
        assert image.size == mask.size == (64, 64) and mask.mode == "P"
    finally:
        for proc in reversed(procs):
            stop(proc)

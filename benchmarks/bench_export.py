"""Export benchmark: peak RSS of ``tasks.export.run_export`` at N and 4·N, and images per
second of the export against the generator alone, measured side by side in one run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_export.py             # N=512 and 2,048, shards of 256
    .venv/bin/python benchmarks/bench_export.py --quick     # N=128 and 512, shards of 64
    .venv/bin/python benchmarks/bench_export.py --json bench-export.json

Set-up (not timed): the real DCGAN's small store (64 images, dlib labels) and a 16-shot-named
LSE fitted on it, in a temporary directory. Each N then runs in a fresh subprocess that loads
the models and warms both paths up, times the generator alone over the export's N latents
(same per-image latent seeds, same batches, images converted to uint8, nothing written),
resets the RSS high-water mark and runs the whole export (generate, label, confidence, PNG
images and masks, latents, parts, index) into a fresh directory. Printed (never asserted):

1. export-phase peak RSS at 4·N / N (target: within 10 %, the export streams shard by shard);
2. images/s of the export and of the generator alone, and their ratio, at both N.

``torch.set_num_threads(--threads)`` (default 1) everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.bench_pipeline import _proc_status_kib, _reset_hwm, set_threads  # noqa: E402

FIT = "fewshot-n16-r0"


def make_fit(workdir: Path) -> str:
    """The small real store and an LSE fitted on it; returns the results root."""
    from lineargan.config import DatasetConfig, FitConfig, Schedule
    from storage.target import Target
    from tasks.cache import build_store
    from tasks.feature_source import FeatureSource
    from tasks.fit import FitJob, fit_or_reuse

    url = build_store(DatasetConfig(n=64, chunk_size=16), str(workdir / "data"), device="cpu")
    store = FeatureSource.open(Target(url), require_complete=True)
    job = FitJob(
        cfg=FitConfig(extractor="LSE", schedule=Schedule(phases=((40, 4),), samples_per_epoch=16)),
        prefix=FIT,
        class_names=store.spec.class_names,
    )
    results = str(workdir / "results")
    fit_or_reuse(store, url, job, results, device="cpu")
    return results


def child(results: str, n: int, shard_size: int) -> dict:
    """One N in this process: the generator alone, then the export (see the module doc)."""
    from lineargan.cache import generator_batch, to_uint8
    from lineargan.synthetic import ExportConfig
    from tasks.export import load_labeller, plan_export, run_export, shard_latents

    out = tempfile.mkdtemp(prefix="bench-export-")
    cfg = ExportConfig(
        fit=FIT, n_images=n, shard_size=shard_size, results_root=results, out=out, device="cpu"
    )
    labeller = load_labeller(plan_export(cfg).members, "cpu")
    g = labeller.generator
    labeller.label(shard_latents(g, 0, range(8))[0], "max_softmax")  # warm-up
    after_models = _proc_status_kib("VmRSS")

    start = time.perf_counter()
    step = generator_batch(g.resolution)
    for shard in range(cfg.n_shards()):
        z, _ = shard_latents(g, cfg.seed, cfg.shard_ids(shard))
        with torch.no_grad():
            for s in range(0, len(z), step):
                to_uint8(g(z[s : s + step]).image)
    generator_s = time.perf_counter() - start

    reset = _reset_hwm()
    start = time.perf_counter()
    summary = run_export(cfg)
    export_s = time.perf_counter() - start
    hwm = _proc_status_kib("VmHWM")
    shutil.rmtree(out, ignore_errors=True)
    return {
        "n": n,
        "shard_size": shard_size,
        "images": summary["images"],
        "generator_s": generator_s,
        "export_s": export_s,
        "generator_images_per_s": n / generator_s,
        "export_images_per_s": n / export_s,
        "rss_after_models_kib": after_models,
        "export_peak_rss_kib": hwm if reset else None,
        "export_increase_kib": hwm - after_models if reset and hwm and after_models else None,
    }


def run_child(results: str, n: int, shard_size: int, threads: int) -> dict:
    args = [sys.executable, os.path.abspath(__file__), "--child", "--results", results]
    args += ["--n", str(n), "--shard-size", str(shard_size), "--threads", str(threads)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"export child for N={n} failed:\n{proc.stderr[-4000:]}")
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="the smaller N (512; 128 with --quick)")
    ap.add_argument("--factor", type=int, default=4, help="larger N = factor x N")
    ap.add_argument("--shard-size", type=int, default=None, help="images per shard (256; 64)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", dest="json_path", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--results", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    n = args.n or (128 if args.quick else 512)
    shard_size = args.shard_size or (64 if args.quick else 256)
    if args.child:
        print(json.dumps(child(args.results, n, shard_size)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        results = make_fit(Path(tmp))
        runs = [run_child(results, k, shard_size, args.threads) for k in (n, args.factor * n)]
    for r in runs:
        print(
            f"N={r['n']:>6}: export {r['export_images_per_s']:.1f} img/s, generator alone "
            f"{r['generator_images_per_s']:.1f} img/s (ratio {r['generator_images_per_s'] / r['export_images_per_s']:.2f}x); "
            f"export-phase peak RSS {r['export_peak_rss_kib'] / 1024:.0f} MiB "
            f"(+{r['export_increase_kib'] / 1024:.0f} MiB over the models loaded)"
        )
    small, large = runs
    ratio = large["export_peak_rss_kib"] / small["export_peak_rss_kib"]
    print(
        f"peak RSS {args.factor}N / N: {ratio:.3f} (target <= 1.10); export cost over the "
        f"generator alone: {small['generator_images_per_s'] / small['export_images_per_s']:.2f}x at N, "
        f"{large['generator_images_per_s'] / large['export_images_per_s']:.2f}x at {args.factor}N"
    )
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"runs": runs, "rss_ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

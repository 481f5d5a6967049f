"""Side-by-side pipeline benchmark: cache overhead, cached vs regenerating LSE steps, cache RSS.

Run from the repository root::

    .venv/bin/python benchmarks/bench_pipeline.py                 # default sizes, a few minutes
    .venv/bin/python benchmarks/bench_pipeline.py --quick         # small sizes, < 1 minute
    .venv/bin/python benchmarks/bench_pipeline.py --json bench.json --profile

Three ratios are measured in one run and printed (never asserted):

1. cache stage / bare G+P forward: ``build_store`` (create the Zarr store, sample latents, run
   G and P per chunk, float16, Blosc zstd + CRC32C, write) against ``generate_and_label`` over
   the same latents in the same chunks with nothing stored. Models are loaded and both paths
   warmed up first, so model loading is excluded from both. Target <= 1.15x.
2. LSE training step, regenerate / cached: the authors' design (sample B latents, run G and P
   every step) against batches streamed from the Zarr cache, with the same LSE
   forward/backward/Adam step. Target >= 5x.
3. Peak RSS of the cache stage at two N a factor 4 apart, each in a fresh subprocess.
   Target flat (<= 1.15x).

``torch.set_num_threads(--threads)`` (default 1) is applied in every measurement, including the
RSS subprocesses.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

GENERATOR = "dcgan-digiface"
SEGMENTER = "dlib-face68"


# -- helpers ------------------------------------------------------------------------------------
def set_threads(n: int) -> None:
    """Pin torch threads; also via the env var the cache jobs honour (tasks.process.tune_process)."""
    os.environ["LINEARGAN_TORCH_THREADS"] = str(n)
    torch.set_num_threads(n)


def peak_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def models():
    from lineargan.models.registry import cached_generator, cached_segmenter

    return cached_generator(GENERATOR, "cpu"), cached_segmenter(SEGMENTER)


def dataset_config(n: int, chunk_size: int, seed: int = 0):
    from lineargan.config import DatasetConfig

    return DatasetConfig(
        generator=GENERATOR,
        segmenter=SEGMENTER,
        split="train",
        seed=seed,
        n=n,
        chunk_size=chunk_size,
    )


class Timer:
    """Wall time and process CPU time (all threads: zarr encodes on its own threads)."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run_build(n: int, chunk_size: int, seed: int = 0) -> tuple[Timer, str, str]:
    """build_store into a fresh temp dir; returns (timer, data_root, store url)."""
    from tasks.cache import build_store

    cfg = dataset_config(n, chunk_size, seed)
    root = tempfile.mkdtemp(prefix="lineargan-bench-")
    with Timer() as t:
        url = build_store(cfg, root, device="cpu")
    return t, root, url


def run_bare(latents: np.ndarray, chunk_size: int) -> Timer:
    """generate_and_label per chunk on the same latents, results discarded."""
    from lineargan.cache import generate_and_label

    g, p = models()
    dev = torch.device("cpu")
    with Timer() as t:
        for start in range(0, len(latents), chunk_size):
            generate_and_label(g, p, latents[start : start + chunk_size], dev)
    return t


def profile_call(fn: Callable[[], object], top: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).sort_stats("tottime")
    stats.print_stats(top)
    return out.getvalue()


# -- 1. cache overhead --------------------------------------------------------------------------
def bench_cache(
    n: int, chunk_size: int, repeats: int, keep: list[str], profile: bool, breakdown: bool
) -> dict:
    g, _ = models()
    latents = g.sample_latents(n, 0).numpy()  # exactly what prepare_store samples (seed 0)

    # Warm-up: one chunk through each path (models already loaded above, imports, allocators).
    run_bare(latents[:chunk_size], chunk_size)
    _, root, _ = run_build(chunk_size, chunk_size, seed=12345)
    shutil.rmtree(root, ignore_errors=True)

    bare, build, url = [], [], ""
    for rep in range(repeats):  # interleaved, best of `repeats`
        bare.append(run_bare(latents, chunk_size))
        timer, root, url_rep = run_build(n, chunk_size)
        build.append(timer)
        if rep == repeats - 1:
            keep.append(root)
            url = url_rep
        else:
            shutil.rmtree(root, ignore_errors=True)
        print(
            f"  [cache] rep {rep + 1}/{repeats}: bare G+P {bare[-1].wall:.2f} s "
            f"(cpu {bare[-1].cpu:.2f} s), build_store {build[-1].wall:.2f} s "
            f"(cpu {build[-1].cpu:.2f} s)",
            flush=True,
        )
    result = {
        "n": n,
        "chunk_size": chunk_size,
        "bare_seconds": [t.wall for t in bare],
        "build_seconds": [t.wall for t in build],
        "bare_cpu_seconds": [t.cpu for t in bare],
        "build_cpu_seconds": [t.cpu for t in build],
        "bare_best": min(t.wall for t in bare),
        "build_best": min(t.wall for t in build),
        "ratio": min(t.wall for t in build) / min(t.wall for t in bare),
        "cpu_ratio": min(t.cpu for t in build) / min(t.cpu for t in bare),
        "store_url": url,
        "store_bytes": _du(url),
    }
    if breakdown:
        result["breakdown"] = breakdown_build(n, chunk_size)
    if profile:
        print("\n--- cProfile: bare G+P loop (top by tottime) ---")
        print(profile_call(lambda: run_bare(latents, chunk_size), 25))
        print("--- cProfile: build_store (top by tottime) ---")
        holder: list[str] = []

        def build() -> None:
            holder.append(run_build(n, chunk_size)[1])

        print(profile_call(build, 40))
        for r in holder:
            shutil.rmtree(r, ignore_errors=True)
    return result


def breakdown_build(n: int, chunk_size: int) -> dict:
    """Time the phases of one real ``build_store`` by wrapping the functions it calls.

    ``build_store``/``fill_chunk`` look these up as module globals at call time, so wrapping
    them (for this one call, then restoring) times the library's own code path. "other" is
    the rest: per-chunk ``FeatureStore.open``/``is_done``, the fingerprint check, the loop.
    """
    import tasks.cache as jc
    from storage.feature_store import FeatureStore

    acc: dict[str, list[float]] = {}

    def wrap(name: str, fn: Callable) -> Callable:
        def inner(*a, **kw):
            t0, c0, tc0 = time.perf_counter(), time.process_time(), time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                w, c, tc = acc.setdefault(name, [0.0, 0.0, 0.0, 0])[:3]
                acc[name][0] = w + time.perf_counter() - t0
                acc[name][1] = c + time.process_time() - c0
                acc[name][2] = tc + time.thread_time() - tc0
                acc[name][3] += 1

        return inner

    saved = {
        "prepare_store": jc.prepare_store,
        "generate_and_label": jc.generate_and_label,
        "finalize_store": jc.finalize_store,
    }
    saved_write = FeatureStore.write_chunk
    try:
        for name, fn in saved.items():
            setattr(jc, name, wrap(name, fn))
        FeatureStore.write_chunk = wrap("write_chunk", saved_write)
        timer, root, _ = run_build(n, chunk_size)
    finally:
        for name, fn in saved.items():
            setattr(jc, name, fn)
        FeatureStore.write_chunk = saved_write
    shutil.rmtree(root, ignore_errors=True)
    phases = {
        k: {"wall": v[0], "cpu": v[1], "main_thread_cpu": v[2], "calls": v[3]}
        for k, v in acc.items()
    }
    other_wall = timer.wall - sum(v["wall"] for v in phases.values())
    other_cpu = timer.cpu - sum(v["cpu"] for v in phases.values())
    phases["other"] = {"wall": other_wall, "cpu": other_cpu, "main_thread_cpu": None, "calls": 0}
    print(
        f"\n--- build_store phases (N={n}, chunk {chunk_size}): total {timer.wall:.2f} s wall, "
        f"{timer.cpu:.2f} s cpu ---"
    )
    print(f"  {'phase':<20}{'calls':>6}{'wall s':>9}{'cpu s':>9}{'main-thread cpu s':>19}")
    for k, v in phases.items():
        mt = "" if v["main_thread_cpu"] is None else f"{v['main_thread_cpu']:.2f}"
        print(f"  {k:<20}{v['calls']:>6}{v['wall']:>9.2f}{v['cpu']:>9.2f}{mt:>19}")
    return {"total_wall": timer.wall, "total_cpu": timer.cpu, "phases": phases}


def _du(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# -- 2. LSE step: cached vs regenerate ----------------------------------------------------------
def _lse_step(model, opt, xs: list[torch.Tensor], y: torch.Tensor, size: int) -> float:
    logits = model(xs, size)
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def _new_lse(n_class: int, dims: list[int]):
    from lineargan.extractors import LSE

    torch.manual_seed(0)
    model = LSE(n_class, dims).train()
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))


def _wait_prefetched(stream, timeout: float = 30.0) -> None:
    """Let the reader thread fill its prefetch queue, so the timed window sees the steady state
    (reads keeping pace with consumption), not the start-up burst of reading ahead."""
    q = getattr(stream, "_queue", None)  # private: best effort, harmless if it changes
    deadline = time.monotonic() + timeout
    while q is not None and hasattr(q, "full") and not q.full() and time.monotonic() < deadline:
        time.sleep(0.01)


def bench_lse(store_url: str, batch: int, steps: int, warmup: int) -> dict:
    from lineargan.cache import to_uint8
    from lineargan.training import to_tensors
    from storage.feature_store import FeatureStore
    from storage.stream import ChunkStream
    from storage.target import Target

    dev = torch.device("cpu")
    store = FeatureStore.open(Target(store_url))
    spec = store.spec
    n_class, dims, size = len(spec.class_names), [s[0] for s in spec.layer_shapes], spec.resolution

    # (a) from the cache
    model, opt = _new_lse(n_class, dims)
    with ChunkStream(store, seed=0) as stream:
        for _ in range(warmup):
            _lse_step(model, opt, *to_tensors(*stream.next_batch(batch), dev), size)
        _wait_prefetched(stream)
        with Timer() as tc:
            for _ in range(steps):
                _lse_step(model, opt, *to_tensors(*stream.next_batch(batch), dev), size)
        cached = tc.wall / steps
        # (a') the same step on batches already decoded into tensors: what the cache costs
        held = [to_tensors(*stream.next_batch(batch), dev) for _ in range(min(steps, 8))]
    model, opt = _new_lse(n_class, dims)
    for xs, y in held[:warmup]:
        _lse_step(model, opt, xs, y, size)
    with Timer() as tm:
        for i in range(steps):
            _lse_step(model, opt, *held[i % len(held)], size)
    in_memory = tm.wall / steps

    # (b) the authors' design: G and P on every step
    g, p = models()
    model, opt = _new_lse(n_class, dims)
    rng = torch.Generator().manual_seed(1)

    def regen_step() -> None:
        z = torch.randn(batch, g.latent_dim, generator=rng)
        with torch.no_grad():
            out = g(z)
        labels = p.segment(to_uint8(out.image)).labels
        _lse_step(model, opt, out.features, torch.from_numpy(labels).long(), size)

    for _ in range(warmup):
        regen_step()
    with Timer() as tr:
        for _ in range(steps):
            regen_step()
    regen = tr.wall / steps
    print(
        f"  [lse] batch {batch}: cached {cached * 1e3:.1f} ms/step, in memory "
        f"{in_memory * 1e3:.1f} ms/step, regenerate {regen * 1e3:.1f} ms/step ({steps} steps)",
        flush=True,
    )
    return {
        "batch": batch,
        "steps": steps,
        "cached_ms_per_step": cached * 1e3,
        "regenerate_ms_per_step": regen * 1e3,
        "in_memory_ms_per_step": in_memory * 1e3,
        "cached_over_in_memory": cached / in_memory,
        "speedup": regen / cached,
        "cached_cpu_ms_per_step": tc.cpu / steps * 1e3,
        "regenerate_cpu_ms_per_step": tr.cpu / steps * 1e3,
        "cpu_speedup": tr.cpu / tc.cpu,
    }


# -- 4. fits: L-BFGS to the certificate vs the paper schedule; NSE-2 memory format -------------
def bench_fits(store_url: str, samples_per_epoch: int, nse2_steps: int) -> dict:
    """The converged LSE (L-BFGS to the quick profile's certificate, data held in memory) vs
    the paper's Adam schedule (streamed, ``samples_per_epoch`` per epoch) on the same store;
    and one NSE-2 training step at batch 64 in channels-last vs contiguous layout."""
    from lineargan.config import PROFILE_SOLVERS, Schedule
    from lineargan.convex import LBFGSSolve
    from lineargan.driver import drive
    from lineargan.extractors import NSE2
    from lineargan.training import ScheduledAdam, to_tensors
    from storage.feature_store import FeatureStore
    from storage.stream import ChunkStream
    from storage.target import Target
    from tasks.fit import full_batch

    dev = torch.device("cpu")
    store = FeatureStore.open(Target(store_url))
    spec = store.spec
    n_class, dims, size = len(spec.class_names), [s[0] for s in spec.layer_shapes], spec.resolution
    model, _ = _new_lse(n_class, dims)
    with Timer() as ta, ChunkStream(store, seed=0) as stream:
        schedule = Schedule(samples_per_epoch=samples_per_epoch)
        adam = drive(ScheduledAdam(model, stream, schedule, size, dev))
    model, _ = _new_lse(n_class, dims)
    with Timer() as tl:
        cert = drive(LBFGSSolve(model, full_batch(store), size, dev, PROFILE_SOLVERS["quick"]))
    print(
        f"  [fits] LSE: L-BFGS {tl.wall:.1f} s to the certificate ({cert.iterations} iterations, "
        f"converged={cert.converged}, loss {cert.final_loss:.4f}); paper schedule {ta.wall:.1f} s "
        f"({adam.iterations} Adam steps, running loss {adam.final_loss:.4f})",
        flush=True,
    )
    batch = store.read_chunk(0)
    xs, y = to_tensors(batch.features, batch.labels, dev)
    times = {}
    for layout in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        nse = NSE2(n_class, dims)
        if layout == "contiguous":  # the layout before the change: no conversions
            nse.to(memory_format=torch.contiguous_format)
            nse.forward = nse.refine
        opt = torch.optim.Adam(nse.parameters(), lr=1e-3)
        _lse_step(nse, opt, xs, y, size)  # warm-up
        with Timer() as tn:
            for _ in range(nse2_steps):
                _lse_step(nse, opt, xs, y, size)
        times[layout] = tn.wall / nse2_steps
    print(
        f"  [fits] NSE-2 step at batch {len(y)}: channels-last {times['channels_last']:.2f} s, "
        f"contiguous {times['contiguous']:.2f} s",
        flush=True,
    )
    return {
        "lbfgs_seconds": tl.wall,
        "lbfgs_iterations": cert.iterations,
        "lbfgs_converged": cert.converged,
        "lbfgs_loss": cert.final_loss,
        "adam_seconds": ta.wall,
        "adam_iterations": adam.iterations,
        "adam_running_loss": adam.final_loss,
        "lbfgs_over_adam": tl.wall / ta.wall,
        "nse2_channels_last_s": times["channels_last"],
        "nse2_contiguous_s": times["contiguous"],
        "nse2_speedup": times["contiguous"] / times["channels_last"],
        "nse2_batch": len(y),
    }


# -- 3. peak RSS of the cache stage -------------------------------------------------------------
def _proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM), None where unavailable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_child(n: int, chunk_size: int) -> None:
    """Entry point of the subprocess: build one store, report own peak RSS as JSON on stdout.

    ``ru_maxrss`` is inherited across ``execve`` on Linux: when ``subprocess`` spawns with
    vfork the child starts with the *parent's* high-water mark, so the primary number is
    ``VmHWM`` of this process's own address space (equal to ru_maxrss when the parent is
    small). ``build_*`` isolates the build: VmHWM is reset after the models are loaded.
    """
    models()
    after_models = _proc_status_kib("VmRSS")
    hwm_models = _proc_status_kib("VmHWM")  # imports + model loading
    reset = _reset_hwm()
    timer, root, _ = run_build(n, chunk_size)
    hwm = _proc_status_kib("VmHWM")
    build_hwm = hwm if reset else None
    shutil.rmtree(root, ignore_errors=True)
    json.dump(
        {
            "n": n,
            "chunk_size": chunk_size,
            "seconds": timer.wall,
            # whole-process peak (imports, models, build): VmHWM where /proc exists
            "peak_rss_kib": max(hwm or 0, hwm_models or 0) or peak_rss_kib(),
            "ru_maxrss_kib": peak_rss_kib(),
            "rss_after_models_kib": after_models,
            "peak_rss_models_kib": hwm_models,
            "build_peak_rss_kib": build_hwm,
            "build_increase_kib": build_hwm - after_models if build_hwm and after_models else None,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


def bench_rss(n_small: int, factor: int, chunk_size: int, threads: int) -> dict:
    peaks = []
    for n in (n_small, n_small * factor):
        proc = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--rss-child",
                "--n",
                str(n),
                "--chunk-size",
                str(chunk_size),
                "--threads",
                str(threads),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"RSS child for N={n} failed:\n{proc.stderr[-4000:]}")
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
        peaks.append(json.loads(line))
        d = peaks[-1]
        extra = (
            f", build phase peak {d['build_peak_rss_kib'] / 1024:.0f} MiB "
            f"(+{d['build_increase_kib'] / 1024:.0f} MiB over models loaded)"
            if d.get("build_peak_rss_kib")
            else ""
        )
        print(
            f"  [rss] N={n}: peak {d['peak_rss_kib'] / 1024:.0f} MiB "
            f"(ru_maxrss {d['ru_maxrss_kib'] / 1024:.0f} MiB){extra}, build {d['seconds']:.1f} s",
            flush=True,
        )
    small, large = peaks
    out = {
        "chunk_size": chunk_size,
        "runs": peaks,
        "ratio": large["peak_rss_kib"] / small["peak_rss_kib"],
    }
    if small.get("build_increase_kib") and large.get("build_increase_kib"):
        out["build_increase_ratio"] = large["build_increase_kib"] / small["build_increase_kib"]
    return out


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="samples for the cache benchmark (512)")
    ap.add_argument("--chunk-size", type=int, default=None, help="chunk = batch of G+P (64)")
    ap.add_argument("--steps", type=int, default=None, help="timed LSE steps per path (50)")
    ap.add_argument("--batches", default=None, help="LSE batch sizes, comma separated (4,64)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved cache repeats (2)")
    ap.add_argument("--rss-n", type=int, default=None, help="smaller N of the RSS pair (256)")
    ap.add_argument("--rss-factor", type=int, default=4, help="larger N = factor x smaller N")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    ap.add_argument("--quick", action="store_true", help="small sizes, < 1 minute")
    ap.add_argument("--profile", action="store_true", help="cProfile build_store vs bare loop")
    ap.add_argument(
        "--breakdown", action="store_true", help="time build_store's phases (G+P, write, ...)"
    )
    ap.add_argument("--json", dest="json_path", default=None, help="write the numbers here")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: cache,lse,fits,rss")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    defaults = (
        {"n": 128, "chunk_size": 32, "steps": 4, "batches": "4,64", "repeats": 1, "rss_n": 32}
        if args.quick
        else {
            "n": 512,
            "chunk_size": 64,
            "steps": 50,
            "batches": "4,64",
            "repeats": 2,
            "rss_n": 256,
        }
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    if args.rss_child:
        rss_child(args.n, args.chunk_size)
        return 0

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    print(
        f"lineargan pipeline benchmark: N={args.n}, chunk={args.chunk_size}, steps={args.steps}, "
        f"batches={batches}, threads={torch.get_num_threads()}, repeats={args.repeats}",
        flush=True,
    )
    t_start = time.perf_counter()
    keep: list[str] = []
    results: dict = {
        "args": {k: v for k, v in vars(args).items() if k != "rss_child"},
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    try:
        t = time.perf_counter()
        models()  # load once, outside every timing
        results["model_load_seconds"] = time.perf_counter() - t

        if "cache" not in skip or "lse" not in skip:
            print("1. cache stage vs bare G+P forward", flush=True)
            results["cache"] = bench_cache(
                args.n,
                args.chunk_size,
                args.repeats,
                keep,
                args.profile and "cache" not in skip,
                args.breakdown and "cache" not in skip,
            )
        if "lse" not in skip:
            print("2. LSE step from the cache vs regenerating G+P", flush=True)
            url = results["cache"]["store_url"]
            warmup = min(3, max(1, args.steps // 10))
            results["lse"] = [bench_lse(url, b, args.steps, warmup) for b in batches]
        if "fits" not in skip:
            print("4. converged LSE (L-BFGS) vs the paper schedule; NSE-2 layouts", flush=True)
            if "cache" not in results:
                results["cache"] = bench_cache(args.n, args.chunk_size, 1, keep, False, False)
            results["fits"] = bench_fits(
                results["cache"]["store_url"], 8 if args.quick else 32, 1 if args.quick else 3
            )
        if "rss" not in skip:
            print("3. peak RSS of the cache stage (fresh subprocesses)", flush=True)
            results["rss"] = bench_rss(args.rss_n, args.rss_factor, args.chunk_size, args.threads)
    finally:
        for root in keep:
            shutil.rmtree(root, ignore_errors=True)
    results["total_seconds"] = time.perf_counter() - t_start

    lines = summary(results)
    print("\n" + "\n".join(lines))
    results["summary"] = lines
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json_path}")
    return 0


def summary(r: dict) -> list[str]:
    lines = []
    if "cache" in r:
        c = r["cache"]
        lines.append(
            f"cache stage / bare G+P forward : {c['ratio']:.2f}x  "
            f"({c['build_best']:.2f} s vs {c['bare_best']:.2f} s for N={c['n']}, "
            f"chunk {c['chunk_size']}; target <= 1.15x)"
        )
        lines.append(f"  same, process CPU time         : {c['cpu_ratio']:.2f}x")
        if "breakdown" in c:  # within one build, so insensitive to load that varies over time
            ph = c["breakdown"]["phases"]
            gen, rest = (
                ph["generate_and_label"],
                [v for k, v in ph.items() if k != "generate_and_label"],
            )
            lines.append(
                f"  one build, (all phases)/(G+P) : "
                f"{1 + sum(v['cpu'] for v in rest) / gen['cpu']:.2f}x cpu, "
                f"{1 + sum(v['wall'] for v in rest) / gen['wall']:.2f}x wall "
                f"(write_chunk {ph['write_chunk']['cpu'] / ph['write_chunk']['calls'] * 1e3:.0f} ms "
                f"cpu per chunk)"
            )
    if "lse" in r:
        parts = ", ".join(f"{x['speedup']:.1f}x at batch {x['batch']}" for x in r["lse"])
        lines.append(f"LSE step, regenerate / cached  : {parts}  (target >= 5x)")
        cpu = ", ".join(f"{x['cpu_speedup']:.1f}x at batch {x['batch']}" for x in r["lse"])
        lines.append(f"  same, process CPU time         : {cpu}")
        mem = ", ".join(
            f"{x['cached_over_in_memory']:.2f}x at batch {x['batch']}" for x in r["lse"]
        )
        lines.append(f"LSE step, cached / in memory   : {mem}  (target <= 1.5x)")
    if "fits" in r:
        f = r["fits"]
        lines.append(
            f"LSE L-BFGS to certificate / paper-schedule Adam : {f['lbfgs_over_adam']:.2f}x  "
            f"({f['lbfgs_seconds']:.1f} s, {f['lbfgs_iterations']} iterations, loss "
            f"{f['lbfgs_loss']:.4f} vs {f['adam_seconds']:.1f} s, {f['adam_iterations']} steps, "
            f"running loss {f['adam_running_loss']:.4f})"
        )
        lines.append(
            f"NSE-2 step, contiguous / channels-last : {f['nse2_speedup']:.2f}x  "
            f"({f['nse2_contiguous_s']:.2f} s vs {f['nse2_channels_last_s']:.2f} s at batch "
            f"{f['nse2_batch']})"
        )
    if "rss" in r:
        a, b = r["rss"]["runs"]
        lines.append(
            f"cache peak RSS N={b['n']} / N={a['n']} : {r['rss']['ratio']:.2f}x  "
            f"({b['peak_rss_kib'] / 1024:.0f} MiB vs {a['peak_rss_kib'] / 1024:.0f} MiB; target flat)"
        )
        if "build_increase_ratio" in r["rss"]:
            lines.append(
                f"  build-phase RSS growth         : {r['rss']['build_increase_ratio']:.2f}x  "
                f"(+{b['build_increase_kib'] / 1024:.0f} MiB vs "
                f"+{a['build_increase_kib'] / 1024:.0f} MiB over models loaded)"
            )
    return lines


if __name__ == "__main__":
    sys.exit(main())

"""The cache flow: sample latents, run G and P once, persist everything in a Zarr store.

Chunks are mapped over Dask workers; finished chunks are skipped, so rerunning after a failure
or a kill resumes where it stopped. Memory per worker is a few chunks, whatever N is.
"""

from __future__ import annotations

import argparse

from prefect import flow, unmapped

from flows.cli import run_cli
from flows.progress import wait_with_progress
from flows.runner import dask_cluster, dask_runner
from lineargan.config import DatasetConfig
from lineargan.paths import default_data_root
from tasks.cache import cache_chunk, finalize_store, prepare_store


@flow(name="cache-stage")
def cache_stage(datasets: list[DatasetConfig], data_root: str, device: str = "auto") -> list[str]:
    """Fill the stores of ``datasets`` (runs under a Dask task runner set by the caller)."""
    prepared = [prepare_store(cfg, data_root) for cfg in datasets]
    futures = []
    for url, pending, _ in prepared:
        futures += cache_chunk.map(unmapped(url), pending, unmapped(device))
    computed = sum(wait_with_progress(futures, "cache chunks"))
    total = sum(n for _, _, n in prepared)
    print(f"cache: computed {computed} chunks, {total - computed} already done")
    for url, _, _ in prepared:
        stats = finalize_store(url)
        print(f"store {url}: complete, segmenter fallback rate {100 * stats['fallback_rate']:.1f}%")
    return [url for url, _, _ in prepared]


def run_cache_stage(
    datasets: list[DatasetConfig], data_root: str, device: str, address: str
) -> list[str]:
    return cache_stage.with_options(task_runner=dask_runner(address))(datasets, data_root, device)


@flow(name="cache", log_prints=True)
def cache(
    dataset: DatasetConfig = DatasetConfig(),
    data_root: str | None = None,
    device: str = "auto",
    dask_address: str | None = None,
    n_workers: int = 2,
) -> str:
    """Build (or resume) one dataset's feature/label store; returns its URL."""
    root = data_root or default_data_root()
    with dask_cluster(dask_address, n_workers) as address:
        return run_cache_stage([dataset], root, device, address)[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.cache", description=cache.__doc__)
    parser.add_argument("--generator", default="dcgan-digiface")
    parser.add_argument("--generator-checkpoint", default=None)
    parser.add_argument("--segmenter", default="dlib-face68")
    parser.add_argument("--split", default="train", choices=["train", "eval"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dask-address", default=None)
    parser.add_argument("--n-workers", type=int, default=2)
    args = parser.parse_args(argv)

    def go() -> None:
        ds = DatasetConfig(
            generator=args.generator,
            generator_checkpoint=args.generator_checkpoint,
            segmenter=args.segmenter,
            split=args.split,
            seed=args.seed,
            n=args.n,
            chunk_size=args.chunk_size,
        )
        url = cache(ds, args.data_root, args.device, args.dask_address, args.n_workers)
        print(url)

    run_cli(go)


if __name__ == "__main__":
    main()

"""The cache flow: sample latents, run G and P once, persist everything in a Zarr store.

Chunks are mapped over Dask workers; finished chunks are skipped, so rerunning after a failure
or a kill resumes where it stopped. Memory per worker is a few chunks, whatever N is.
"""

from __future__ import annotations

from flows.interrupt import supervise

if __name__ == "__main__":
    supervise()  # before the heavy imports: the terminal's Ctrl-C reaches a small supervisor

from prefect import flow, unmapped

from flows.cli import parse_config, run_cli
from flows.preflight import check_inputs, checked_once
from flows.progress import wait_with_progress
from flows.runner import dask_cluster, dask_runner, device_tasks
from lineargan.config import DatasetConfig
from lineargan.paths import default_data_root
from tasks.prefect_tasks import cache_chunk, finalize_store, prepare_store


@flow(name="cache-stage")
def cache_stage(datasets: list[DatasetConfig], data_root: str, device: str = "auto") -> list[str]:
    """Fill the stores of ``datasets`` (runs under a Dask task runner set by the caller; the
    caller checked and sized them: ``flows.preflight``)."""
    prepared = [prepare_store(cfg, data_root) for cfg in datasets]
    futures = []
    with device_tasks():
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
    check_cache(dataset, root, dask_address)
    with dask_cluster(dask_address, n_workers) as address:
        return run_cache_stage([dataset], root, device, address)[0]


def check_cache(
    dataset: DatasetConfig, data_root: str, dask_address: str | None, *, keep: bool = False
) -> None:
    """The cache flow's pre-flight (:func:`flows.preflight.check_inputs`), once per run."""
    key = f"cache:{dataset.model_dump_json()}:{data_root}:{dask_address}"
    checked_once(
        key, lambda: check_inputs([dataset], data_root, dask_address=dask_address), keep=keep
    )


def main(argv: list[str] | None = None) -> None:
    def go() -> None:
        fields = {
            "data_root": (str | None, None),
            "device": (str, "auto"),
            "dask_address": (str | None, None),
            "n_workers": (int, 2),
        }
        dataset, own = parse_config(
            DatasetConfig, argv, "python -m flows.cache", cache.__doc__ or "", **fields
        )
        root = own["data_root"] or default_data_root()
        check_cache(dataset, root, own["dask_address"], keep=True)  # before any server
        print(cache(dataset, **own))

    run_cli(go)


if __name__ == "__main__":
    main()

"""The export flow: a labelled synthetic dataset from a saved fit, at any size.

``python -m flows.export --fit fewshot-n8-r0-converged-ridge1e-03 --n 10000`` (or the
deployment ``export/default`` with ``--param config='{"fit": …, "n": …}'``): the fit's
generator draws N images, the fit labels them, and shards of ``shard_size`` images (PNG
images, palette-PNG masks, latents) are written by the Dask workers to any fsspec root, each
shard resumable on its own: a killed export reruns only its unfinished shards. The index
(``metadata.parquet``: id, latent seed, class areas, confidence, kept) is written last; the
layout is ``storage.dataset_export``'s, which pandas + Pillow and Hugging Face ``datasets``
(``imagefolder``) read without this project.
"""

from __future__ import annotations

from flows.interrupt import supervise

if __name__ == "__main__":
    supervise()  # before the heavy imports: the terminal's Ctrl-C reaches a small supervisor

from prefect import flow, unmapped

from flows.cli import parse_config, run_cli
from flows.preflight import checked_once
from flows.progress import wait_with_progress
from flows.runner import check_scheduler, dask_cluster, dask_runner, device_tasks
from lineargan.synthetic import ExportConfig
from storage.dataset_export import check_same_export
from storage.target import Target
from tasks.export import ExportPlan, plan_export
from tasks.prefect_tasks import export_shard, finalize_export, prepare_export


@flow(name="export-stage")
def export_stage(config: ExportConfig) -> dict:
    """Write the pending shards on the Dask workers, then the index (runs under the task
    runner the caller sets)."""
    root, pending = prepare_export(config)
    with device_tasks():
        futures = export_shard.map(unmapped(config), unmapped(root), pending)
    written = sum(wait_with_progress(futures, "export shards"))
    summary = finalize_export(config, root)
    print(
        f"export: wrote {written} shards, {config.n_shards() - written} already done; "
        f"{summary['images']} images ({summary['kept']} kept, mean confidence "
        f"{summary['mean_confidence']:.3f}, kept {summary['kept_mean_confidence']:.3f}); "
        f"index {summary['index']}"
    )
    return {**summary, "written": written}


@flow(name="export", log_prints=True)
def export(config: ExportConfig) -> dict:
    """Export ``config.n_images`` images of the fit's generator, labelled by ``config.fit``."""
    check_export(config)  # taken from the command line's check when it just ran one
    with dask_cluster(config.dask_address, config.n_workers) as address:
        return export_stage.with_options(task_runner=dask_runner(address))(config)


def check_export(config: ExportConfig, *, keep: bool = False) -> ExportPlan:
    """The export's pre-flight, once per run: the fit exists and is readable (its repeats for
    the ensemble measure), the export root can be written and holds no other export, the
    Dask scheduler answers. Loads no model."""

    def check() -> ExportPlan:
        plan = plan_export(config)
        Target(plan.root).ensure_writable(quick=True)
        check_same_export(plan.root, plan.spec)
        if config.dask_address:
            check_scheduler(config.dask_address)
        return plan

    return checked_once(f"export:{config.model_dump_json()}", check, keep=keep)


def main(argv: list[str] | None = None) -> None:
    def go() -> None:
        config, _ = parse_config(ExportConfig, argv, "python -m flows.export", export.__doc__ or "")
        plan = check_export(config, keep=True)  # before any server or cluster starts
        print(
            f"export: {config.n_images} images of {plan.spec['generator']} labelled by {plan.members[0]} -> {plan.root}"
        )
        export(config)

    run_cli(go)


if __name__ == "__main__":
    main()

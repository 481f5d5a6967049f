"""The ``reproduce`` flow: cache → fit → evaluate → Table 1 for one generator/segmenter pair.

Run it as a deployment (``prefect deployment run reproduce/quick``) or directly in ephemeral
mode: ``python -m flows.reproduce --profile smoke``. Rerunning with the same parameters reuses
finished store chunks, fits and evaluations.
"""

from __future__ import annotations

import argparse

from prefect import flow

from flows.cache import run_cache_stage
from flows.cli import run_cli
from flows.fit_evaluate import current_run_id, fit_evaluate_stage
from flows.runner import dask_cluster, dask_runner
from lineargan.config import PROFILES, RunConfig
from lineargan.paths import default_data_root, default_results_root
from storage.target import Target


@flow(name="reproduce", log_prints=True)
def reproduce(config: RunConfig = RunConfig()) -> dict:
    """Table 1 end to end for ``config`` (profile sizes, models, seeds, roots, Dask address)."""
    data_root = config.data_root or default_data_root()
    results_root = config.results_root or default_results_root()
    Target(data_root).ensure_writable()
    Target(results_root).ensure_writable()
    profile = config.resolved_profile
    print(
        f"reproduce: profile {profile.name} ({profile.n_train} train / {profile.n_eval} eval images, "
        f"{config.fit('LSE').schedule.iterations()} iterations per extractor), data {data_root}, results {results_root}"
    )
    with dask_cluster(config.dask_address, config.n_workers) as address:
        train_url, eval_url = run_cache_stage(
            [config.dataset("train"), config.dataset("eval")], data_root, config.device, address
        )
        out = fit_evaluate_stage.with_options(task_runner=dask_runner(address))(
            config, train_url, eval_url, results_root, current_run_id()
        )
    print(f"results: tables under {results_root}/tables, figure {out['figure']}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flows.reproduce", description=reproduce.__doc__
    )
    parser.add_argument("--profile", default="quick", help=f"one of {sorted(PROFILES)}")
    parser.add_argument("--generator", default="dcgan-digiface")
    parser.add_argument("--generator-checkpoint", default=None)
    parser.add_argument("--segmenter", default="dlib-face68")
    parser.add_argument("--extractors", nargs="+", default=["LSE", "NSE-1", "NSE-2"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--results-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dask-address", default=None)
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-eval", type=int, default=None)
    args = parser.parse_args(argv)

    def go() -> None:
        config = RunConfig(
            profile=args.profile,
            generator=args.generator,
            generator_checkpoint=args.generator_checkpoint,
            segmenter=args.segmenter,
            extractors=tuple(args.extractors),
            data_root=args.data_root,
            results_root=args.results_root,
            device=args.device,
            dask_address=args.dask_address,
            n_workers=args.n_workers,
            n_train=args.n_train,
            n_eval=args.n_eval,
        )
        for root in (config.data_root, config.results_root):
            if root:
                Target(root).ensure_writable()  # fail before any server or cluster starts
        reproduce(config)

    run_cli(go)


if __name__ == "__main__":
    main()

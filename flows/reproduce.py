"""The ``reproduce`` flow: cache → Table 1 fits → every analysis of the paper, as one DAG.

Run it as a deployment (``prefect deployment run reproduce/quick``) or directly in ephemeral
mode: ``python -m flows.reproduce --profile smoke``. Independent analyses run in parallel with
the Table 1 fits on the Dask workers. Rerunning with the same parameters reuses finished store
chunks, fits, evaluations and analyses (each keyed by its configuration), so a failed or
killed run resumes with only the unfinished work.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow

from flows.analyses import submit_after_fits, submit_independent, submit_with_reference
from flows.cache import run_cache_stage
from flows.cli import run_cli
from flows.fit_evaluate import current_run_id, report_table1, submit_fits
from flows.progress import wait_with_progress
from flows.runner import dask_cluster, dask_runner
from lineargan.config import ALL_ANALYSES, PROFILES, RunConfig
from lineargan.errors import LinearGanError
from lineargan.jobs.analysis import AnalysisContext
from lineargan.paths import default_data_root, default_results_root
from lineargan.render import miou_from_rows
from storage.target import Target
from tasks.report import write_results_index


@flow(name="reproduce-stage")
def reproduce_stage(
    config: RunConfig, train_url: str, eval_url: str, results_root: str, run_id: str
) -> dict:
    """Table 1 and the analyses over cached stores (Dask runner set by the caller)."""
    ctx = AnalysisContext(train_url, eval_url, results_root, config.profile, run_id, config.device)
    fits, evals = submit_fits(config, train_url, eval_url, results_root, run_id)
    analyses = submit_independent(config, ctx)
    lse_miou = None
    if "LSE" in config.extractors:
        lse_miou = miou_from_rows(evals[config.extractors.index("LSE")].result())
    analyses |= submit_with_reference(config, ctx, lse_miou)
    metas = wait_with_progress(fits, "fits")
    frames = wait_with_progress(evals, "evaluations")
    table1 = report_table1(config, metas, frames, train_url, eval_url, results_root, run_id)
    analyses |= submit_after_fits(config, ctx)
    results = wait_with_progress(list(analyses.values()), "analyses")
    for result in results:
        print(result["markdown"])
    index = write_results_index([table1, *results], frames, results_root, config.profile, run_id)
    figures = [f for r in [table1, *results] for f in r["figures"]]
    return {"results_root": results_root, "index": index, "figures": figures}


@flow(name="reproduce", log_prints=True)
def reproduce(config: RunConfig = RunConfig()) -> dict:
    """All of the paper's tables for ``config`` (profile sizes, models, seeds, roots, Dask address)."""
    data_root = config.data_root or default_data_root()
    results_root = config.results_root or default_results_root()
    Target(data_root).ensure_writable()
    Target(results_root).require_local("results_root")
    Target(results_root).ensure_writable()
    profile = config.resolved_profile
    print(
        f"reproduce: profile {profile.name} ({profile.n_train} train / {profile.n_eval} eval images, "
        f"{config.fit('LSE').schedule.iterations()} iterations per extractor; analyses: "
        f"{', '.join(config.analyses) or 'none'}), data {data_root}, results {results_root}"
    )
    with dask_cluster(config.dask_address, config.n_workers) as address:
        train_url, eval_url = run_cache_stage(
            [config.dataset("train"), config.dataset("eval")], data_root, config.device, address
        )
        out = reproduce_stage.with_options(task_runner=dask_runner(address))(
            config, train_url, eval_url, results_root, current_run_id()
        )
    print(
        f"results: tables under {results_root}/tables (index: results_index), figures {out['figures']}"
    )
    return out


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["cosine_similarity.t1=5", "fewshot.shots=[1, 4]"]`` → nested dict; values are JSON
    when they parse as JSON (numbers, lists, booleans), plain strings otherwise."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, raw = item.partition("=")
        name, dot, field = target.partition(".")
        if not (sep and dot and name and field):
            raise LinearGanError(
                f"cannot read --set {item!r}",
                "write it as ANALYSIS.FIELD=VALUE, e.g. fewshot.repeats=3",
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name, {})[field] = value
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
    parser.add_argument(
        "--analyses", nargs="*", default=list(ALL_ANALYSES), help="none for Table 1 only"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ANALYSIS.FIELD=VALUE",
        help="override an analysis parameter, e.g. --set cosine_similarity.t1=5 (JSON values)",
    )
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
            analyses=tuple(args.analyses),
            analysis_params=parse_overrides(args.set),
            data_root=args.data_root,
            results_root=args.results_root,
            device=args.device,
            dask_address=args.dask_address,
            n_workers=args.n_workers,
            n_train=args.n_train,
            n_eval=args.n_eval,
        )
        if config.results_root:
            Target(config.results_root).require_local("results_root")
        for root in (config.data_root, config.results_root):
            if root:
                Target(root).ensure_writable()  # fail before any server or cluster starts
        reproduce(config)

    run_cli(go)


if __name__ == "__main__":
    main()

"""The ``reproduce`` flow: cache → Table 1 fits → every analysis of the paper, as one DAG.

Run it as a deployment (``prefect deployment run reproduce/quick``) or directly in ephemeral
mode: ``python -m flows.reproduce --profile smoke``. Independent analyses run in parallel with
the Table 1 fits on the Dask workers. Rerunning with the same parameters reuses finished store
chunks, fits, evaluations and analyses (each keyed by its configuration), so a failed or
killed run resumes with only the unfinished work.
"""

from __future__ import annotations

from flows.interrupt import supervise

if __name__ == "__main__":
    supervise()  # before the heavy imports: the terminal's Ctrl-C reaches a small supervisor

import json
from typing import Any

from prefect import flow
from pydantic import Field

from flows.analyses import submit_analyses
from flows.cache import run_cache_stage
from flows.cli import parse_config, run_cli
from flows.fit_evaluate import current_run_id, report_table1, submit_fits
from flows.preflight import check_inputs
from flows.progress import wait_with_progress
from flows.runner import dask_cluster, dask_runner
from lineargan.config import RunConfig
from lineargan.errors import LinearGanError
from lineargan.paths import default_data_root, default_results_root
from tasks.analyses.contract import AnalysisContext
from tasks.analyses.registry import resolve_analyses
from tasks.prefect_tasks import write_results_index


@flow(name="reproduce-stage")
def reproduce_stage(
    config: RunConfig, train_url: str, eval_url: str, results_root: str, run_id: str
) -> dict:
    """Table 1 and the analyses over cached stores (Dask runner set by the caller)."""
    ctx = AnalysisContext(train_url, eval_url, results_root, config.profile, run_id, config.device)
    fits, evals = submit_fits(config, train_url, eval_url, results_root, run_id)
    analyses = submit_analyses(resolve_analyses(config), ctx, fits, evals)
    metas = wait_with_progress(fits.values(), "fits")
    frames = wait_with_progress(evals.values(), "evaluations")
    table1 = report_table1(config, metas, frames, train_url, eval_url, results_root, run_id)
    results = wait_with_progress(analyses, "analyses")
    for result in results:
        print(result["markdown"])
    index = write_results_index([table1, *results], results_root, config.profile, run_id)
    figures = [f for r in [table1, *results] for f in r["figures"]]
    return {"results_root": results_root, "index": index, "figures": figures}


@flow(name="reproduce", log_prints=True)
def reproduce(config: RunConfig = RunConfig()) -> dict:
    """All of the paper's tables for ``config`` (profile sizes, models, seeds, roots, Dask address)."""
    data_root, results_root, analyses = check_run(config)
    profile = config.resolved_profile
    print(
        f"reproduce: profile {profile.name} ({profile.n_train} train / {profile.n_eval} eval images, "
        f"{config.fit('LSE').schedule.iterations()} iterations per extractor; analyses: "
        f"{', '.join(analyses) or 'none'}), data {data_root}, results {results_root}"
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


def check_run(config: RunConfig) -> tuple[str, str, list[str]]:
    """Check everything a reproduce run of ``config`` can check before it starts (analysis
    names and parameters, roots, Dask scheduler, models, stores: :func:`check_inputs`); returns
    its data root, results root and analyses."""
    data_root = config.data_root or default_data_root()
    results_root = config.results_root or default_results_root()
    analyses = resolve_analyses(config)
    datasets = [config.dataset("train"), config.dataset("eval")]
    check_inputs(datasets, data_root, results_root, config.dask_address)
    return data_root, results_root, analyses


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
    def go() -> None:
        config, own = parse_config(
            RunConfig,
            argv,
            "python -m flows.reproduce",
            reproduce.__doc__ or "",
            set=(
                list[str],
                Field(
                    default_factory=list,
                    description="override one analysis parameter, ANALYSIS.FIELD=VALUE (JSON "
                    "values), e.g. --set cosine_similarity.t1=5; merged into analysis_params",
                ),
            ),
        )
        overrides = parse_overrides(own["set"])
        if overrides:
            merged = {k: dict(v) for k, v in config.analysis_params.items()}
            for name, fields in overrides.items():
                merged.setdefault(name, {}).update(fields)
            config = config.model_copy(update={"analysis_params": merged})
        check_run(config)  # before any server or cluster starts
        reproduce(config)

    run_cli(go)


if __name__ == "__main__":
    main()

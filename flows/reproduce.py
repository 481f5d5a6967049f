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

from flows.analyses import analysis_stage, current_run_id
from flows.cache import run_cache_stage
from flows.cli import parse_config, run_cli
from flows.preflight import check_run
from flows.runner import dask_cluster, dask_runner
from lineargan.config import RunConfig
from lineargan.errors import LinearGanError
from tasks.run_context import RunContext


@flow(name="reproduce", log_prints=True)
def reproduce(config: RunConfig = RunConfig()) -> dict:
    """All of the paper's tables for ``config`` (profile sizes, models, seeds, roots, Dask address)."""
    analyses = check_run(config)  # taken from the command line's check when it just ran one
    ctx = RunContext.for_run(config, current_run_id())
    profile = config.resolved_profile
    print(
        f"reproduce: profile {profile.name} ({profile.n_train} train / {profile.n_eval} eval images, "
        f"{config.fit('LSE').schedule.iterations()} iterations per extractor; analyses: "
        f"{', '.join(analyses)}), data {ctx.data_root}, results {ctx.results_root}"
    )
    with dask_cluster(config.dask_address, config.n_workers) as address:
        run_cache_stage(
            [config.dataset("train"), config.dataset("eval")], ctx.data_root, ctx.device, address
        )
        out = analysis_stage.with_options(task_runner=dask_runner(address))(ctx, analyses)
    print(
        f"results: tables under {ctx.results_root}/tables (index: results_index), "
        f"figures {out['figures']}"
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
        check_run(config, keep=True)  # before any server or cluster starts
        reproduce(config)

    run_cli(go)


if __name__ == "__main__":
    main()

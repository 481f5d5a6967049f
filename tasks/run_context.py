"""The run context: the run-level values every step of a run reads, made once per run.

A flow makes one :class:`RunContext` from its :class:`~lineargan.config.RunConfig` after the
run's checks passed (``flows.preflight.check_run``) and hands it to every task: where the stores
and results live, which profile and run the rows it writes belong to, where models run, and
which Dask scheduler runs the tasks. Steps read these from the context instead of taking them
as loose arguments, so a new run-level value is one field here, not a change to every
signature, and no step re-derives a default root or re-checks what the flow checked.

It is a frozen dataclass of strings: Prefect hashes it into task inputs and Dask pickles it to
the workers, both cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

from lineargan.config import RunConfig
from lineargan.paths import default_data_root, default_results_root
from storage.feature_store import FeatureStore, check_same_models
from storage.layout import dataset_store
from storage.target import Target
from tasks.feature_source import FeatureSource


@dataclass(frozen=True)
class RunContext:
    """Where a run reads and writes, and the run it is.

    ``train_url`` / ``eval_url``: the run's two stores (known from the config before the cache
    stage builds them: a store's path is a function of its dataset). ``data_root``: where the
    run builds stores (None for work over stores made earlier). ``dask_address``: the
    scheduler the run's tasks go to (None: a local cluster the flow starts)."""

    train_url: str
    eval_url: str
    results_root: str
    profile: str
    run_id: str
    device: str = "auto"
    data_root: str | None = None
    dask_address: str | None = None

    @classmethod
    def for_run(cls, config: RunConfig, run_id: str) -> RunContext:
        """The context of a run of ``config`` (roots default to the project's folders)."""
        data_root = config.data_root or default_data_root()

        def url(split: str) -> str:
            return dataset_store(data_root, config.dataset(split)).url

        return cls(
            train_url=url("train"),
            eval_url=url("eval"),
            results_root=config.results_root or default_results_root(),
            profile=config.profile,
            run_id=run_id,
            device=config.device,
            data_root=data_root,
            dask_address=config.dask_address,
        )

    def train_store(self) -> FeatureStore:
        return FeatureSource.open(Target(self.train_url), require_complete=True)

    def eval_store(self) -> FeatureStore:
        return FeatureSource.open(Target(self.eval_url), require_complete=True)

    def stores(self) -> tuple[FeatureStore, FeatureStore]:
        """(train, eval), checked to come from the same models before any work starts."""
        train, evals = self.train_store(), self.eval_store()
        check_same_models(train.spec, evals.spec)
        return train, evals

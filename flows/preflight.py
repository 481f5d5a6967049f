"""Pre-flight: the inputs of a run that can be checked without running it, checked once, before
any Prefect server or Dask cluster starts.

A command line checks its run (:func:`check_run`, :func:`check_inputs`) before it calls its
flow, so a mistake is one line within seconds instead of a traceback after the server, the
cluster and hundreds of log lines. A flow started as a deployment has had no command line, so
the flow checks too; when its own command line has just checked the same run in this process,
the flow takes that result instead of checking again (:func:`checked_once`), so every check,
store sizing included, runs once per run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flows.runner import check_scheduler
from lineargan.config import DatasetConfig, Frozen, RunConfig, options_json
from lineargan.masks import TargetMasks, read_target_masks
from lineargan.models.registry import cached_segmenter
from storage.target import Target
from tasks.analyses.registry import resolve_analyses
from tasks.cache import size_stores
from tasks.run_context import RunContext

T = TypeVar("T")
_CHECKED: dict[str, object] = {}


def checked_once(key: str, check: Callable[[], T], *, keep: bool = False) -> T:
    """``check()``, unless this process checked ``key`` with ``keep=True`` and nobody has taken
    the result yet: the command line keeps its result for the flow it starts next, the flow
    takes it (a later run checks afresh: the disk may have changed)."""
    if not keep and key in _CHECKED:
        return _CHECKED.pop(key)  # type: ignore[return-value]
    result = check()
    if keep:
        _CHECKED[key] = result
    return result


def check_inputs(
    datasets: list[DatasetConfig],
    data_root: str,
    results_root: str | None = None,
    dask_address: str | None = None,
) -> int:
    """Refuse, with one :class:`~lineargan.errors.LinearGanError`, a run whose roots cannot be
    written (a file, a read-only place, an object store without credentials or out of reach),
    whose Dask scheduler does not answer, or whose stores cannot be made as asked: a checkpoint
    that is no torch file or pickles code, a store policy naming layers the generator lacks, a
    store already at the run's path made for another dataset (chunk size, weights), a store
    over its budget. The cheap checks go first. Prints what each store will write and returns
    the bytes to go."""
    for root in dict.fromkeys(r for r in (data_root, results_root) if r):
        Target(root).ensure_writable(quick=True)
    if dask_address:
        check_scheduler(dask_address)
    return size_stores(datasets, data_root)


def check_target_masks(config: RunConfig, analyses: dict[str, Frozen]) -> None:
    """Read every analysis's folder of target masks (``target_masks``) into the run's classes,
    so a pixel value no class has or a class map naming an unknown class is one line now. The
    folder's files themselves (empty, unreadable, JPEG, several channels) were checked when
    the parameters were made; the run's class names need its segmenter, loaded only here."""
    for params in analyses.values():
        masks = getattr(params, "target_masks", None)
        if isinstance(masks, TargetMasks):
            segmenter = cached_segmenter(
                config.segmenter,
                config.segmenter_checkpoint,
                options_json(config.segmenter_options),
            )
            read_target_masks(masks, tuple(segmenter.class_names))


def check_run(config: RunConfig, *, keep: bool = False) -> dict[str, Frozen]:
    """Check everything a run of ``config`` can check before it starts: analysis names and
    parameters (and edit spaces the generator must take, and target-mask folders), then
    :func:`check_inputs`. Returns
    the run's analyses with their parameters. ``keep``: the command line's check, taken by the
    flow it starts (:func:`checked_once`)."""

    def check() -> dict[str, Frozen]:
        analyses = resolve_analyses(config)
        check_target_masks(config, analyses)
        datasets = [config.dataset("train"), config.dataset("eval")]
        roots = RunContext.for_run(config, run_id="")  # the roots the run will use
        check_inputs(datasets, roots.data_root, roots.results_root, config.dask_address)
        return analyses

    return checked_once(f"run:{config.model_dump_json()}", check, keep=keep)

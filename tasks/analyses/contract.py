"""The contract every analysis of the full-table reproduction follows.

An analysis is one :class:`AnalysisSpec` in :mod:`tasks.analyses.registry`: its name, typed
parameters with per-profile defaults, what it needs (:class:`Needs`), its run function, the
Parquet tables it writes (with pyarrow schemas) and the renderers of its paper tables. The
reproduce flow builds its DAG from these declarations: an analysis starts as soon as what it
declares is ready, and its report is rendered from the tables it wrote by the same renderer
that ``lineargan render`` uses.

Lifecycle of one analysis (all plain functions; Prefect wraps them in ``tasks.prefect_tasks``):

1. ``run(ctx, params, inputs)`` does the work and writes its tables. It is keyed by
   :func:`analysis_key` (name, parameters, both store digests); a manifest written last marks
   it finished, so a rerun with the same key returns at once (``reused=True``).
2. ``summarize(ctx, params, result, reference)`` (optional) adds what depends on other
   analyses' numbers (Table 1's LSE mIoU for Table 2's ratio column). It is cheap and runs
   after ``run`` and the reference, so the expensive part never waits for the reference.
3. The report: each renderer's markdown over the run's tables, written under a name keyed
   like the figures (an overridden run never replaces the defaults' report).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from lineargan.config import Frozen, RunConfig
from lineargan.errors import LinearGanError
from lineargan.models import GeneratorAdapter, Segmenter
from storage.feature_store import FeatureStore, check_same_models
from storage.manifests import load_manifest, save_manifest
from storage.tables import read_table_part
from storage.target import Target

# Bumped when what a finished analysis writes changes (2: PNG + PDF figures, rendered reports,
# fit checkpoints listed), so results written by older code are recomputed, not reused.
RESULT_FORMAT = 2


@dataclass(frozen=True)
class AnalysisContext:
    """Where an analysis reads and writes, and the run it belongs to."""

    train_url: str
    eval_url: str
    results_root: str
    profile: str
    run_id: str
    device: str = "auto"

    def train_store(self) -> FeatureStore:
        return FeatureStore.open(Target(self.train_url), require_complete=True)

    def eval_store(self) -> FeatureStore:
        return FeatureStore.open(Target(self.eval_url), require_complete=True)

    def stores(self) -> tuple[FeatureStore, FeatureStore]:
        """(train, eval), checked to come from the same models before any work starts."""
        train, evals = self.train_store(), self.eval_store()
        check_same_models(train.spec, evals.spec)
        return train, evals


@dataclass(frozen=True)
class Needs:
    """What an analysis reads besides the two cached stores; the DAG waits for exactly this.

    ``fits``: Table 1's fitted extractors (their checkpoint metadata, by extractor name) and
    their evaluations, which the run reuses. ``reference``: Table 1 mIoUs only ``summarize``
    shows (the run never waits for them). ``generator`` / ``segmenter``: models the run calls
    in its loop, handed over by :class:`Inputs` (loaded once per worker, checked against the
    store's fingerprint). ``after``: analyses whose work it reuses (SCS reuses Table 2's
    few-shot LSEs and the baseline UNet); when they run in the same run, it starts after them
    instead of training the same checkpoints beside them.
    """

    fits: bool = False
    reference: tuple[str, ...] = ()
    generator: bool = False
    segmenter: bool = False
    after: tuple[str, ...] = ()


@dataclass
class Inputs:
    """What the DAG hands an analysis: Table 1's fits (``Needs.fits``), by extractor, and the
    models it declared (``Needs.generator`` / ``Needs.segmenter``)."""

    fits: dict[str, dict] = field(default_factory=dict)
    generator: GeneratorAdapter | None = None
    segmenter: Segmenter | None = None


@dataclass
class AnalysisResult:
    """What an analysis produced: table parts written, figures, its rendered report."""

    name: str
    key: str
    tables: dict[str, str] = field(default_factory=dict)  # table name -> part URL
    figures: list[str] = field(default_factory=list)
    fits: list[str] = field(default_factory=list)  # checkpoint directories it trained or reused
    markdown: str = ""
    reports: list[str] = field(default_factory=list)
    reused: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


Renderer = Callable[[Mapping[str, pd.DataFrame]], str]


@dataclass(frozen=True)
class PaperTable:
    """One paper table or figure: a title and the renderer over the analysis's tables."""

    title: str
    render: Renderer


@dataclass(frozen=True)
class AnalysisSpec:
    """One registered analysis (see the module docstring for the lifecycle)."""

    name: str
    params: type[Frozen]
    defaults: Callable[[RunConfig], Frozen]
    run: Callable[[AnalysisContext, Any, Inputs], AnalysisResult]
    tables: Mapping[str, pa.Schema]
    renderers: Mapping[str, PaperTable]
    needs: Needs = Needs()
    summarize: Callable[[AnalysisContext, Any, AnalysisResult, dict[str, float]], None] | None = (
        None
    )
    cost: int = 1  # relative run time: expensive analyses are submitted first


def analysis_key(name: str, params: BaseModel, stores: tuple[FeatureStore, FeatureStore]) -> str:
    """sha256 over the analysis name, its parameters and the digests of both (train, eval)
    stores."""
    train, evals = stores
    blob = json.dumps(
        {
            "format": RESULT_FORMAT,
            "analysis": name,
            "params": params.model_dump(mode="json"),
            "train": train.spec.digest(),
            "eval": evals.spec.digest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_finished(ctx: AnalysisContext, name: str, key: str) -> AnalysisResult | None:
    """The stored result of a finished analysis with this key, if any."""
    data = load_manifest(ctx.results_root, f"{name}-{key}")
    if data is None:
        return None
    fields = AnalysisResult.__dataclass_fields__
    return AnalysisResult(**{**{k: v for k, v in data.items() if k in fields}, "reused": True})


def read_finished_part(ctx: AnalysisContext, table: str, result: AnalysisResult) -> pd.DataFrame:
    """A table part a finished analysis wrote; its absence means the results were tampered
    with, which a one-line error says how to repair (recompute that analysis)."""
    part = read_table_part(ctx.results_root, table, result.key)
    if part is None:
        raise LinearGanError(
            f"{result.name} is marked finished but its table {table!r} (part {result.key}) is "
            "missing",
            f"delete {ctx.results_root}/manifests/{result.name}-{result.key}.json and rerun",
        )
    return part


def unchanged(stored: float, new: float | None) -> bool:
    """Whether a stored reference number equals the new one (None and NaN: "not given"), so
    a rerun with the same reference rewrites nothing."""
    if new is None or math.isnan(new):
        return math.isnan(stored)
    return not math.isnan(stored) and stored == float(new)


def save_finished(ctx: AnalysisContext, result: AnalysisResult) -> AnalysisResult:
    """Write the manifest that marks the analysis finished (last, after its tables)."""
    save_manifest(ctx.results_root, f"{result.name}-{result.key}", result.to_dict())
    return result


def figure_name(stem: str, ctx: AnalysisContext, key: str) -> str:
    """``<stem>-<profile>-<key[:8]>``: a run with other parameters (``analysis_params``) writes
    its own figure instead of replacing the one of the defaults."""
    return f"{stem}-{ctx.profile}-{key[:8]}"

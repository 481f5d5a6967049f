"""The contract every analysis of the full-table reproduction follows.

An analysis is one folder, ``tasks/analyses/<name>/``: its science (``science.py``: parameters
with per-profile defaults and the math; no storage, Prefect, zarr or pyarrow, checked by an
import-linter contract), its step (``step.py``: ``compute(ctx, params, inputs) -> Output``, the
frames, figures and fits it made, written nowhere) and its renderers (``render.py``: markdown
from its tables, no I/O). Its ``__init__.py`` declares them in one :class:`AnalysisSpec` and
:mod:`tasks.analyses.registry` lists it in one line. Science several analyses share (or that
``lineargan-edit`` uses too) lives in :mod:`lineargan.analyses`.

The lifecycle is written once, in :mod:`tasks.analyses.runner`, for every analysis: keying
(:func:`tasks.analyses.runner.analysis_key`), reuse of a finished result, the key and run
metadata columns, table part writes, figure names, the manifest that marks it finished, the
summary with other analyses' numbers (``summarize``) and the rendered report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from lineargan.config import Frozen, RunConfig
from lineargan.models import GeneratorAdapter, Segmenter
from storage.feature_store import FeatureStore
from storage.tables import PartialUnits
from tasks.run_context import RunContext

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL.Image import Image

# Bumped when what a finished analysis writes changes (2: PNG + PDF figures, rendered reports,
# fit checkpoints listed), so results written by older code are recomputed, not reused.
RESULT_FORMAT = 2


@dataclass(frozen=True)
class Needs:
    """What an analysis reads besides the two cached stores; the DAG waits for exactly this.

    ``fits``: Table 1's fitted extractors (their checkpoint metadata, by extractor name) and
    their evaluations, which the run reuses. ``reference``: Table 1 mIoUs only ``summarize``
    shows (the run never waits for them). ``generator`` / ``segmenter``: models the run calls
    in its loop, handed over by :class:`Inputs` (loaded once per worker, checked against the
    store's fingerprint). ``after``: analyses whose work it reuses (SCS reuses Table 2's
    few-shot LSEs and the baseline UNet); when they run in the same run, it starts after them
    instead of training the same checkpoints beside them, and its ``defaults`` get their
    parameters.
    """

    fits: bool = False
    reference: tuple[str, ...] = ()
    generator: bool = False
    segmenter: bool = False
    after: tuple[str, ...] = ()


@dataclass
class Inputs:
    """What the runner hands ``compute``: both stores (opened and checked once), Table 1's
    fits (``Needs.fits``) by extractor, the models it declared (``Needs.generator`` /
    ``Needs.segmenter``) and ``units``, where a long analysis keeps finished pieces of work
    so a killed run resumes after them (cleared by the runner once the analysis is finished)."""

    train: FeatureStore
    evals: FeatureStore
    units: PartialUnits
    fits: dict[str, dict] = field(default_factory=dict)
    generator: GeneratorAdapter | None = None
    segmenter: Segmenter | None = None


@dataclass
class Output:
    """What ``compute`` made, written by the runner: ``tables`` (name -> rows without the key
    and run metadata columns, which the runner adds), ``figures`` (stem -> image, written as
    ``figures/<stem>-<profile>-<key8>``, in this order) and ``fits`` (checkpoint directories
    it trained or reused)."""

    tables: dict[str, pd.DataFrame]
    figures: dict[str, Image | Figure] = field(default_factory=dict)
    fits: list[str] = field(default_factory=list)


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
# summarize(params, read, reference): the tables to rewrite with other analyses' numbers
# (``read(table)`` gives a table part the analysis wrote; ``reference``: Table 1 mIoUs by
# extractor); empty when nothing changed, so a rerun with the same reference rewrites nothing.
Summarizer = Callable[
    [Any, Callable[[str], pd.DataFrame], dict[str, float]], dict[str, pd.DataFrame]
]


@dataclass(frozen=True)
class PaperTable:
    """One paper table or figure: a title and the renderer over the analysis's tables."""

    title: str
    render: Renderer


@dataclass(frozen=True)
class AnalysisSpec:
    """One registered analysis: its parameters and their defaults for a run (``defaults(config,
    after)``, ``after``: the parameters of the analyses of ``needs.after``), its step, the
    Parquet tables it writes (with pyarrow schemas), the renderers of its paper tables."""

    name: str
    params: type[Frozen]
    defaults: Callable[[RunConfig, Mapping[str, Frozen]], Frozen]
    compute: Callable[[RunContext, Any, Inputs], Output]
    tables: Mapping[str, pa.Schema]
    renderers: Mapping[str, PaperTable]
    needs: Needs = Needs()
    summarize: Summarizer | None = None
    cost: int = 1  # relative run time: expensive analyses are submitted first
    # tables other steps write that its renderers read too (Table 1: the evaluations' rows)
    reads: tuple[str, ...] = ()
    # runs only when named in RunConfig.analyses (an experiment too slow for every run)
    optional: bool = False


def unchanged(stored: float, new: float | None) -> bool:
    """Whether a stored reference number equals the new one (None and NaN: "not given"), so
    a rerun with the same reference rewrites nothing."""
    if new is None or math.isnan(new):
        return math.isnan(stored)
    return not math.isnan(stored) and stored == float(new)

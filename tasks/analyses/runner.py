"""The one lifecycle of every analysis: keyed, reused when finished, written, rendered.

An analysis only computes (``spec.compute`` returns an :class:`~tasks.analyses.contract.Output`);
everything else happens here, once, the same way for all of them:

1. :func:`run_analysis`: open and check both stores, key the work (:func:`analysis_key`: name,
   parameters, both store digests) and return the finished result of that key if there is one
   (``reused=True``); else load the declared models, ``compute``, write each table part under
   the key (adding the key column its schema declares, ``key`` or ``analysis_key``, and the run
   metadata), each figure as ``<stem>-<profile>-<key8>``, and last the manifest that marks it
   finished (then its partial units are removed).
2. :func:`finish_analysis`: ``summarize`` (optional) adds what depends on other analyses'
   numbers (Table 1's LSE mIoU for Table 2's ratio column); it is cheap and runs after the
   work and the reference, so the expensive part never waits for the reference. Then each
   renderer's markdown over the analysis's tables becomes its report, keyed like the figures
   (an overridden run never replaces the defaults' report).

The Prefect tasks in :mod:`tasks.prefect_tasks` wrap exactly these; tests call them directly.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from lineargan.errors import LinearGanError
from lineargan.render import miou_from_rows
from storage.feature_store import FeatureStore
from storage.layout import table_dir, write_figure
from storage.manifests import load_manifest, save_manifest
from storage.tables import PartialUnits, read_table_part, run_metadata, write_table_part
from tasks.analyses.contract import RESULT_FORMAT, AnalysisResult, AnalysisSpec, Inputs
from tasks.analyses.registry import get_analysis
from tasks.analyses.report import render_experiment
from tasks.process import tune_process
from tasks.run_context import RunContext
from tasks.store_models import store_generator, store_segmenter

KEY_COLUMNS = ("key", "analysis_key")  # the analysis key, under the name a schema gives it


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


def figure_name(stem: str, ctx: RunContext, key: str) -> str:
    """``<stem>-<profile>-<key[:8]>``: a run with other parameters (``analysis_params``) writes
    its own figure instead of replacing the one of the defaults."""
    return f"{stem}-{ctx.profile}-{key[:8]}"


def load_finished(ctx: RunContext, name: str, key: str) -> AnalysisResult | None:
    """The stored result of a finished analysis with this key, if any."""
    data = load_manifest(ctx.results_root, f"{name}-{key}")
    if data is None:
        return None
    fields = AnalysisResult.__dataclass_fields__
    return AnalysisResult(**{**{k: v for k, v in data.items() if k in fields}, "reused": True})


def read_finished_part(ctx: RunContext, table: str, result: AnalysisResult) -> pd.DataFrame:
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


def write_part(ctx: RunContext, table: str, key: str, df: pd.DataFrame, schema: pa.Schema) -> str:
    """Write ``df`` as the part ``key`` of ``table``, with the key column its schema declares
    and the run metadata it does not already carry (rows read back keep their own)."""
    df = df.copy()
    for column in KEY_COLUMNS:
        if column in schema.names:
            df[column] = key
    for column, value in run_metadata(ctx.profile, ctx.run_id).items():
        if column not in df:
            df[column] = value
    return write_table_part(ctx.results_root, table, key, df, schema)


def _inputs(
    spec: AnalysisSpec, ctx: RunContext, train, evals, key: str, fits: dict | None
) -> Inputs:
    inputs = Inputs(
        train=train,
        evals=evals,
        units=PartialUnits(ctx.results_root, f"{spec.name}-{key}"),
        fits=dict(fits or {}),
    )
    if spec.needs.generator:
        inputs.generator = store_generator(train, ctx.device)
    if spec.needs.segmenter:
        inputs.segmenter = store_segmenter(train)
    return inputs


def run_analysis(
    name: str, ctx: RunContext, params: BaseModel, fits: dict[str, dict] | None = None
) -> AnalysisResult:
    """Run analysis ``name`` (or return its finished result); ``fits``: Table 1's fit metadata
    by extractor, for analyses that declare ``Needs.fits``."""
    spec = get_analysis(name)
    params = spec.params.model_validate(params)
    tune_process()
    train, evals = ctx.stores()
    key = analysis_key(name, params, (train, evals))
    if (done := load_finished(ctx, name, key)) is not None:
        return done
    inputs = _inputs(spec, ctx, train, evals, key, fits)
    out = spec.compute(ctx, params, inputs)
    unknown = sorted(set(out.tables) - set(spec.tables))
    if unknown:
        raise ValueError(f"{name} computed tables it does not declare: {unknown}")
    tables = {
        table: write_part(ctx, table, key, df, spec.tables[table])
        for table, df in out.tables.items()
    }
    tables.update({table: table_dir(ctx.results_root, table).url for table in spec.reads})
    figures = [
        url
        for stem, image in out.figures.items()
        for url in write_figure(ctx.results_root, figure_name(stem, ctx, key), image)
    ]
    result = AnalysisResult(name=name, key=key, tables=tables, figures=figures, fits=out.fits)
    save_manifest(ctx.results_root, f"{name}-{key}", result.to_dict())
    inputs.units.clear()  # after the manifest: a kill in between loses nothing
    return result


def finish_analysis(
    name: str,
    ctx: RunContext,
    params: BaseModel,
    result: AnalysisResult,
    reference: dict[str, pd.DataFrame | float] | None = None,
) -> AnalysisResult:
    """Summarise with the reference mIoUs (by extractor: Table 1's per-class IoU rows of that
    fit, or the mIoU itself) and render the analysis's paper tables from the tables it wrote."""
    spec = get_analysis(name)
    if spec.summarize is not None:
        ref = {
            ext: miou_from_rows(rows) if isinstance(rows, pd.DataFrame) else float(rows)
            for ext, rows in (reference or {}).items()
        }
        changed = spec.summarize(
            spec.params.model_validate(params),
            lambda table: read_finished_part(ctx, table, result),
            ref,
        )
        for table, df in changed.items():
            result.tables[table] = write_part(ctx, table, result.key, df, spec.tables[table])
    return render_experiment(result, ctx.results_root, ctx.profile, ctx.run_id)


def run_and_finish(
    name: str,
    ctx: RunContext,
    params: BaseModel,
    fits: dict[str, dict] | None = None,
    reference: dict[str, pd.DataFrame | float] | None = None,
) -> AnalysisResult:
    """Both steps in one call (scripts, tests): what the DAG does for one analysis."""
    result = run_analysis(name, ctx, params, fits)
    return finish_analysis(name, ctx, params, result, reference)

"""The analysis contract and registry: declared needs drive the DAG, overridden runs get their
own outputs, and a new analysis plugs in through the recipe of docs/architecture.md
("Adding an analysis") alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image
from pydantic import PositiveInt

import flows.analyses as dag
from lineargan.config import Frozen, RunConfig
from lineargan.render import markdown_grid
from storage.tables import schema
from tasks.analyses.contract import AnalysisSpec, Needs, Output, PaperTable
from tasks.analyses.registry import ANALYSES, analysis_params, resolve_analyses
from tasks.analyses.runner import analysis_key, run_analysis, run_and_finish
from tasks.index import write_index_and_report
from tasks.render import paper_tables, render


class Recorder:
    """Stands in for a Prefect task: records what ``submit`` was given."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, []

    def submit(self, *args, wait_for=None):
        self.calls.append(args)
        self.waits = {**getattr(self, "waits", {}), args[0]: wait_for}
        return f"{self.name}:{args[0]}"


def test_the_dag_passes_each_analysis_exactly_what_it_declares(monkeypatch):
    run, finish = Recorder("run"), Recorder("finish")
    monkeypatch.setattr(dag, "run_analysis", run)
    monkeypatch.setattr(dag, "finish_analysis", finish)
    params = resolve_analyses(RunConfig(profile="smoke"))
    fits = {"LSE": "fit-LSE", "NSE-1": "fit-NSE-1", "NSE-2": "fit-NSE-2"}
    evals = {"LSE": "eval-LSE", "NSE-1": "eval-NSE-1", "NSE-2": "eval-NSE-2"}
    futures = dag.submit_analyses(params, "ctx", fits, evals)

    submitted = {args[0]: args for args in run.calls}
    assert set(submitted) == {n for n, spec in ANALYSES.items() if not spec.optional}
    # only Table 1, category selection, SeFa (labelled by Table 1's LSE), Fig 8 (which scores
    # the fits' snapshots) and SIE (Fig 5's full-LSE arm) wait for Table 1's fits (and their
    # evaluations, which they reuse instead of racing them); nothing else waits
    for name in ("table1", "category_selection", "sefa", "training_curves"):
        assert submitted[name][3] == fits and run.waits[name] == list(evals.values())
    # SCS and SIE reuse Table 2's few-shot LSEs and the baseline UNet: they start after those
    assert run.waits["scs"] == ["run:fewshot", "run:baseline_segmenter"]
    assert submitted["sie"][3] == fits
    after = ["run:fewshot", "run:baseline_segmenter", "run:scs"]
    assert run.waits["sie"] == [*evals.values(), *after]
    waiting = ("table1", "category_selection", "sefa", "training_curves", "scs", "sie")
    others = [name for name in submitted if name not in waiting]
    assert all(submitted[name][3] is None and run.waits[name] == [] for name in others)
    # the reference numbers go to the finish step only, and only the ones declared
    finished = {args[0]: args for args in finish.calls}
    assert finished["fewshot"][3] == "run:fewshot" and finished["fewshot"][4] == {"LSE": "eval-LSE"}
    assert finished["class_centers"][4] == {"LSE": "eval-LSE"}
    assert finished["cosine_similarity"][4] == {} and finished["layerwise"][4] == {}
    # expensive analyses are submitted first (Dask starts ready tasks in submission order),
    # each after what it declares in Needs.after
    order = [args[0] for args in run.calls]
    for name in order:
        assert all(order.index(a) < order.index(name) for a in ANALYSES[name].needs.after)
    free = [n for n in order if not ANALYSES[n].needs.after]
    costs = [ANALYSES[n].cost for n in free]
    assert costs == sorted(costs, reverse=True)
    # the finished results come back in registry order: the report's order, Table 1 first
    assert futures == [f"finish:{name}" for name in params] and list(params)[0] == "table1"


def test_table1_only_submits_table1(monkeypatch):
    run, finish = Recorder("run"), Recorder("finish")
    monkeypatch.setattr(dag, "run_analysis", run)
    monkeypatch.setattr(dag, "finish_analysis", finish)
    params = resolve_analyses(RunConfig(analyses=()))
    assert dag.submit_analyses(params, "ctx", {}, {}) == ["finish:table1"]
    assert [args[0] for args in run.calls] == ["table1"]


def test_an_overridden_run_gets_its_own_key_report_and_figure(ctx):
    default = RunConfig(profile="smoke")
    other = RunConfig(profile="smoke", analysis_params={"cosine_similarity": {"t2": 50}})
    a = run_and_finish("cosine_similarity", ctx, analysis_params(default, "cosine_similarity"))
    b = run_and_finish("cosine_similarity", ctx, analysis_params(other, "cosine_similarity"))
    assert a.key != b.key
    assert set(a.reports).isdisjoint(b.reports) and set(a.figures).isdisjoint(b.figures)
    for result in (a, b):  # both reports survive, each with its own numbers
        assert all(
            Path(p).read_text() == result.markdown.split("\nFigure:")[0] for p in result.reports
        )
    assert "T2 = 100" in Path(a.reports[0]).read_text()
    assert "T2 = 50" in Path(b.reports[0]).read_text()


# -- the recipe of docs/architecture.md, followed by a test-only analysis -------------------------
# One folder's worth: science (parameters with per-profile defaults, and the math), step
# (``compute``: frames, figures, fits; written nowhere), renderer, and its SPEC; the runner
# does the rest (keying, reuse, key column, run metadata, table parts, figure names, manifest,
# report).


class PixelShareParams(Frozen):  # science.py: parameters with per-profile defaults ...
    max_images: PositiveInt = 64

    @classmethod
    def for_run(cls, config: RunConfig, after=None) -> PixelShareParams:
        return cls(max_images=16 if config.profile == "smoke" else 64)


def pixel_share(labels: np.ndarray, n_class: int) -> np.ndarray:  # ... and the math
    return np.bincount(labels.ravel(), minlength=n_class) / labels.size


TABLES = {"pixel_share": schema(class_name=pa.string(), share=pa.float64(), key=pa.string())}
COMPUTED: list[int] = []


def compute(ctx, params, inputs) -> Output:  # step.py
    COMPUTED.append(params.max_images)
    evals = inputs.evals
    labels = evals.read_samples(range(min(params.max_images, evals.spec.n)))[1]
    share = pixel_share(labels, len(evals.spec.class_names))
    df = pd.DataFrame({"class_name": list(evals.spec.class_names), "share": share})
    figure = Image.fromarray((labels[0] * 30).astype(np.uint8))
    return Output(tables={"pixel_share": df}, figures={"pixel-share": figure})


def render_pixel_share(tables) -> str:  # render.py
    df = tables["pixel_share"].set_index("class_name")[["share"]]
    return markdown_grid(df.map(lambda v: f"{100 * v:.1f}"), "class")


SPEC = AnalysisSpec(  # __init__.py; the registry lists it in one line
    name="pixel_share",
    params=PixelShareParams,
    defaults=PixelShareParams.for_run,
    compute=compute,
    tables=TABLES,
    renderers={"pixel_share": PaperTable("Label pixel share (%)", render_pixel_share)},
)


def test_a_new_analysis_plugs_in_through_the_registry_alone(ctx, monkeypatch):
    monkeypatch.setitem(ANALYSES, "pixel_share", SPEC)
    COMPUTED.clear()
    config = RunConfig(
        profile="smoke",
        analyses=("pixel_share",),
        analysis_params={"pixel_share": {"max_images": 8}},
    )
    params = resolve_analyses(config)
    assert list(params) == ["table1", "pixel_share"]
    assert params["pixel_share"] == PixelShareParams(max_images=8)
    defaults = resolve_analyses(config.model_copy(update={"analysis_params": {}}))
    assert defaults["pixel_share"] == PixelShareParams(max_images=16)
    assert "pixel_share" in paper_tables()

    result = run_and_finish("pixel_share", ctx, params["pixel_share"])
    # keyed: by name, parameters and both stores
    assert result.key == analysis_key("pixel_share", params["pixel_share"], ctx.stores())
    assert not result.reused and COMPUTED == [8]
    # written: the part under the key, with the key column and the run metadata the runner adds
    table = pd.read_parquet(result.tables["pixel_share"])
    assert table["share"].sum() == pytest.approx(1.0)
    assert set(table["key"]) == {result.key} and set(table["run_id"]) == {ctx.run_id}
    assert list(table.columns) == TABLES["pixel_share"].names
    assert [Path(f).name for f in result.figures] == [f"pixel-share-smoke-{result.key[:8]}.png"]
    assert Path(result.figures[0]).exists()
    # reused on rerun: nothing computed, the same files
    again = run_and_finish("pixel_share", ctx, params["pixel_share"])
    assert again.reused and COMPUTED == [8]
    assert (again.tables, again.figures) == (result.tables, result.figures)
    # rendered: the report, and `lineargan render` from the Parquet files alone
    write_index_and_report([again], ctx.results_root, ctx.profile, ctx.run_id)
    rendered = render("pixel_share", ctx.results_root, "smoke")
    assert rendered == Path(result.reports[0]).read_text() == result.markdown.split("\nFigure:")[0]
    assert f"Figure: `{result.figures[0]}`" in result.markdown
    assert Path(result.reports[0]).name == f"pixel_share-smoke-{result.key[:8]}.md"
    with pytest.raises(Exception, match="max_images"):
        resolve_analyses(config.model_copy(update={"analysis_params": {"pixel_share": {"n": 1}}}))


def test_a_table_the_analysis_does_not_declare_is_refused(ctx, monkeypatch):
    def stray(ctx, params, inputs) -> Output:
        return Output(tables={"stray": pd.DataFrame({"x": [1]})})

    monkeypatch.setitem(ANALYSES, "pixel_share", replace(SPEC, compute=stray))
    with pytest.raises(ValueError, match="stray"):
        run_analysis("pixel_share", ctx, PixelShareParams())


def test_declared_models_are_handed_over_and_undeclared_ones_are_not(ctx, monkeypatch, generator):
    seen = {}

    def compute(ctx, params, inputs):
        seen["inputs"] = inputs
        return Output(tables={})

    for needs in (Needs(generator=True, segmenter=True), Needs()):
        spec = AnalysisSpec(
            name="probe",
            params=PixelShareParams,
            defaults=lambda config, after: PixelShareParams(),
            compute=compute,
            tables={},
            renderers={},
            needs=needs,
        )
        monkeypatch.setitem(ANALYSES, "probe", spec)
        run_analysis("probe", ctx, PixelShareParams(max_images=1 + needs.generator))
        inputs = seen["inputs"]
        if needs.generator:
            # the very weights that made the store, and its segmenter's classes
            assert inputs.generator.weights_sha256 == generator.weights_sha256
            assert tuple(inputs.segmenter.class_names) == tuple(NAMES)
        else:
            assert inputs.generator is None and inputs.segmenter is None


NAMES = ["background", "skin", "eyebrows", "eyes", "nose", "lips", "mouth"]


def test_a_dependency_left_out_of_the_run_is_not_waited_for():
    from flows.analyses import submission_order

    assert submission_order(["sie", "scs"]) == ["scs", "sie"]  # cost order, nothing to wait for
    order = submission_order(list(ANALYSES))
    assert order.index("fewshot") < order.index("scs") and order.index("fewshot") < order.index(
        "sie"
    )


def test_every_after_names_a_registered_analysis():
    for spec in ANALYSES.values():
        assert set(spec.needs.after) <= set(ANALYSES) - {spec.name}, spec.name
    # sie starts after scs as well: both would otherwise train the same 8-shot LSE and UNet
    assert "scs" in ANALYSES["sie"].needs.after

"""The analysis registry: every analysis of the reproduction, by name, and how a run uses them.

Adding an analysis is one folder, ``tasks/analyses/<name>/`` (science, step, renderer and the
``SPEC`` that declares them: see :mod:`tasks.analyses.contract`), and one line in
:data:`ANALYSES`. The reproduce flow, the parameter overrides (``RunConfig.analysis_params``),
the report and ``lineargan render`` all read this table; nothing else lists analyses.

Parameters of an analysis for a run are the profile's defaults (``AnalysisSpec.defaults``)
(given the parameters of the analyses it reuses, ``Needs.after``) updated field by field by
the run's ``analysis_params``, validated against the analysis's own
pydantic model, so a misspelt field fails before anything runs.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lineargan.config import ALL_EXTRACTORS, Frozen, RunConfig
from lineargan.errors import LinearGanError
from lineargan.latent_search import EditSpace
from tasks.analyses import (
    baseline_segmenter,
    category_selection,
    class_centers,
    cosine_similarity,
    fewshot,
    layerwise,
    scs,
    scs_experiments,
    sefa,
    sie,
    table1,
    training_curves,
)
from tasks.analyses.contract import AnalysisSpec
from tasks.store_models import options_in_latent_space

# Every run makes Table 1: its fits are the extractors the other analyses reuse.
TABLE1 = table1.SPEC.name

ANALYSES: dict[str, AnalysisSpec] = {
    TABLE1: table1.SPEC,
    fewshot.SPEC.name: fewshot.SPEC,
    category_selection.SPEC.name: category_selection.SPEC,
    class_centers.SPEC.name: class_centers.SPEC,
    cosine_similarity.SPEC.name: cosine_similarity.SPEC,
    layerwise.SPEC.name: layerwise.SPEC,
    baseline_segmenter.SPEC.name: baseline_segmenter.SPEC,
    scs.SPEC.name: scs.SPEC,
    scs_experiments.SPEC.name: scs_experiments.SPEC,
    sie.SPEC.name: sie.SPEC,
    sefa.SPEC.name: sefa.SPEC,
    training_curves.SPEC.name: training_curves.SPEC,
}


def get_analysis(name: str) -> AnalysisSpec:
    if name not in ANALYSES:
        raise LinearGanError(f"unknown analysis {name!r}", f"use one of: {', '.join(ANALYSES)}")
    return ANALYSES[name]


def selected_analyses(config: RunConfig) -> list[str]:
    """The analyses ``config`` runs, names checked: Table 1 and those ``config.analyses``
    lists (None: every registered one but the optional ones), in registry order (the order
    of the report)."""
    every = {name for name, spec in ANALYSES.items() if not spec.optional}
    chosen = every if config.analyses is None else {TABLE1, *config.analyses}
    names = [name for name in ANALYSES if name in chosen]
    for name in [*(config.analyses or ()), *config.analysis_params]:
        get_analysis(name)
    return names


def _merge(base: Any, override: Any) -> Any:
    """Override ``base`` field by field: nested dicts merge (``{"schedule": {"lr": 5e-4}}``
    keeps the run's other schedule fields) instead of replacing the whole sub-model."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return override


def _merged(config: RunConfig, base: Frozen, overrides: dict[str, Any]) -> dict:
    merged = _merge(base.model_dump(), overrides)
    if isinstance(overrides.get("fits"), list | tuple):
        # a list of sub-models (category selection's fits): each listed fit starts from the
        # run's own fit of that extractor, so naming only the extractors still reuses Table 1
        merged["fits"] = [
            _merge(config.fit(f["extractor"]).model_dump(), f)
            if isinstance(f, dict) and f.get("extractor") in ALL_EXTRACTORS
            else f
            for f in overrides["fits"]
        ]
    return merged


def analysis_params(config: RunConfig, name: str) -> Frozen:
    """``name``'s parameters for ``config``: profile defaults updated by the run's overrides."""
    spec = get_analysis(name)
    base = spec.defaults(config, {a: analysis_params(config, a) for a in spec.needs.after})
    overrides: dict[str, Any] = dict(config.analysis_params.get(name, {}))
    if not overrides:
        return base
    try:
        return spec.params(**_merged(config, base, overrides))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or name}: {err['msg']}" for err in e.errors()
        )
        fields = ", ".join(spec.params.model_fields)
        raise LinearGanError(
            f"invalid analysis_params for {name}: {problems}",
            f"valid fields of {name}: {fields}",
        ) from None


def resolve_analyses(config: RunConfig) -> dict[str, Frozen]:
    """Every selected analysis with its parameters: the check a run makes before any work
    (an edit space the run's generator cannot take is refused here, not hours later)."""
    resolved = {name: analysis_params(config, name) for name in selected_analyses(config)}
    for params in resolved.values():
        if isinstance(params, EditSpace) and params.edit_space is not None:
            options_in_latent_space(config.generator, config.generator_options, params.edit_space)
    return resolved

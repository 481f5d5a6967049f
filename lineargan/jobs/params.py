"""Each analysis's parameters for a run: the profile's defaults, then the run's overrides.

The reproduce flow takes one :class:`~lineargan.config.RunConfig`; its ``analysis_params``
maps an analysis name to field overrides (``{"cosine_similarity": {"t1": 5}}``), so a user
can rerun one analysis with other settings without editing code. Overrides are validated
against the analysis's own pydantic model, so a misspelt field fails before anything runs.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lineargan.config import ALL_EXTRACTORS, AnalysisName, Frozen, RunConfig
from lineargan.errors import LinearGanError
from lineargan.jobs.category_selection import CategorySelectionParams
from lineargan.jobs.class_centers import ClassCentersParams
from lineargan.jobs.cosine_similarity import CosineSimilarityParams
from lineargan.jobs.fewshot import FewShotParams
from lineargan.jobs.layerwise import LayerwiseParams

PARAMS: dict[str, type[Frozen]] = {
    "fewshot": FewShotParams,
    "category_selection": CategorySelectionParams,
    "class_centers": ClassCentersParams,
    "cosine_similarity": CosineSimilarityParams,
    "layerwise": LayerwiseParams,
}


def _defaults(config: RunConfig, name: AnalysisName) -> Frozen:
    if name == "category_selection":  # round 1 must be Table 1's fits, to reuse them
        return CategorySelectionParams.for_run(config)
    if name == "layerwise":  # the run's LSE schedule and fit seed, like Table 1's LSE
        fit = config.fit("LSE")
        return LayerwiseParams(schedule=fit.schedule, seed=fit.seed)
    return PARAMS[name].for_profile(config.profile)


def _merge(base: Any, override: Any) -> Any:
    """Override ``base`` field by field: nested dicts merge (``{"schedule": {"lr": 5e-4}}``
    keeps the run's other schedule fields) instead of replacing the whole sub-model."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return override


def _merged(config: RunConfig, name: str, base: Frozen, overrides: dict[str, Any]) -> dict:
    merged = _merge(base.model_dump(), overrides)
    if name == "category_selection" and "fits" in overrides:
        # each listed fit starts from the run's own fit of that extractor (schedule, seed), so
        # naming only the extractors still reuses Table 1's fits in round 1
        merged["fits"] = [
            _merge(config.fit(f["extractor"]).model_dump(), f)
            if isinstance(f, dict) and f.get("extractor") in ALL_EXTRACTORS
            else f
            for f in overrides["fits"]
        ]
    return merged


def analysis_params(config: RunConfig, name: AnalysisName) -> Frozen:
    """``name``'s parameters for ``config``: profile defaults updated by the run's overrides."""
    if name not in PARAMS:
        raise LinearGanError(f"unknown analysis {name!r}", f"use one of: {', '.join(PARAMS)}")
    base = _defaults(config, name)
    overrides: dict[str, Any] = dict(config.analysis_params.get(name, {}))
    if not overrides:
        return base
    try:
        return type(base)(**_merged(config, name, base, overrides))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or name}: {err['msg']}" for err in e.errors()
        )
        fields = ", ".join(type(base).model_fields)
        raise LinearGanError(
            f"invalid analysis_params for {name}: {problems}",
            f"valid fields of {name}: {fields}",
        ) from None

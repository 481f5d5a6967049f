"""The analysis registry: every analysis of the reproduction, by name, and how a run uses them.

Adding an analysis is a science module (``lineargan/analyses/<name>.py``: its parameters and
math), a pipeline module (``tasks/analyses/<name>.py``: ``run``, ``TABLES``, optionally
``summarize``), a renderer per paper table (``lineargan/render.py``) and one entry in
:data:`ANALYSES`. The reproduce flow, the parameter overrides (``RunConfig.analysis_params``),
the report and ``lineargan render`` all read this table; nothing else lists analyses.

Parameters of an analysis for a run are the profile's defaults (``AnalysisSpec.defaults``)
updated field by field by the run's ``analysis_params``, validated against the analysis's own
pydantic model, so a misspelt field fails before anything runs.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lineargan import render
from lineargan.analyses.category_selection import CategorySelectionParams
from lineargan.analyses.class_centers import ClassCentersParams
from lineargan.analyses.cosine_similarity import CosineSimilarityParams
from lineargan.analyses.fewshot import FewShotParams
from lineargan.analyses.layerwise import LayerwiseParams
from lineargan.analyses.scs import SCSParams
from lineargan.analyses.sie import SIEParams
from lineargan.baseline import UNetParams
from lineargan.config import ALL_EXTRACTORS, Frozen, RunConfig
from lineargan.errors import LinearGanError
from lineargan.latent_search import EditSpace
from storage.store_models import options_in_latent_space
from tasks.analyses import (
    baseline_segmenter,
    category_selection,
    class_centers,
    cosine_similarity,
    fewshot,
    layerwise,
    scs,
    sie,
)
from tasks.analyses.contract import AnalysisSpec, Needs, PaperTable

ANALYSES: dict[str, AnalysisSpec] = {
    spec.name: spec
    for spec in (
        AnalysisSpec(
            name="fewshot",
            params=FewShotParams,
            defaults=lambda config: FewShotParams.for_profile(config.profile),
            run=fewshot.run_fewshot,
            summarize=fewshot.summarize,
            tables=fewshot.TABLES,
            renderers={
                "table2": PaperTable(
                    "Table 2 — few-shot LSE, mean ± max deviation and ratio to the full LSE",
                    render.render_table2,
                )
            },
            needs=Needs(reference=("LSE", "LSE:converged")),
            cost=3,
        ),
        AnalysisSpec(
            name="category_selection",
            params=CategorySelectionParams,
            # round 1 must be Table 1's fits (same schedule and seed), to reuse them
            defaults=CategorySelectionParams.for_run,
            run=category_selection.run_category_selection,
            tables=category_selection.TABLES,
            renderers={
                "table4": PaperTable(
                    "Tables 4 & 5 — category selection (Appx E), both rounds",
                    render.render_table4,
                )
            },
            needs=Needs(fits=True),
            cost=2,
        ),
        AnalysisSpec(
            name="class_centers",
            params=ClassCentersParams,
            defaults=lambda config: ClassCentersParams.for_profile(config.profile),
            run=class_centers.run_class_centers,
            summarize=class_centers.summarize,
            tables=class_centers.TABLES,
            renderers={
                "fig4": PaperTable(
                    "Fig 4 / Sec 3.3 — nearest class-center segmentation, per-class IoU (%)",
                    render.render_fig4,
                )
            },
            needs=Needs(reference=("LSE",)),
        ),
        AnalysisSpec(
            name="cosine_similarity",
            params=CosineSimilarityParams,
            defaults=lambda config: CosineSimilarityParams.for_profile(config.profile),
            run=cosine_similarity.run_cosine_similarity,
            tables=cosine_similarity.TABLES,
            renderers={
                "fig9": PaperTable(
                    "Fig 9 / Appx F — cosine similarity between class feature pools",
                    render.render_fig9,
                )
            },
        ),
        AnalysisSpec(
            name="layerwise",
            params=LayerwiseParams,
            # the run's LSE schedule and fit seed, like Table 1's LSE
            defaults=lambda config: LayerwiseParams(
                schedule=config.fit("LSE").schedule, seed=config.fit_seed
            ),
            run=layerwise.run_layerwise,
            tables=layerwise.TABLES,
            renderers={
                "layerwise": PaperTable(
                    "Appx I — layer-wise mIoU of an LSE trained with per-layer losses",
                    render.render_layerwise,
                )
            },
            cost=2,
        ),
        AnalysisSpec(
            name="baseline_segmenter",
            params=UNetParams,
            defaults=lambda config: UNetParams.for_profile(config.profile),
            run=baseline_segmenter.run_baseline_segmenter,
            tables=baseline_segmenter.TABLES,
            renderers={
                "baseline": PaperTable(
                    "Baseline segmenter — the SCS/SIE UNet vs the reference segmenter, IoU (%)",
                    render.render_baseline_segmenter,
                )
            },
            cost=4,  # first: SCS and SIE wait for it, and it trains while Table 1 does
        ),
        AnalysisSpec(
            name="scs",
            params=SCSParams,
            # Table 2's few-shot LSEs and the baseline UNet of this run, reused
            defaults=lambda config: SCSParams.for_profile(
                config.profile, config.protocol, **_reused(config)
            ),
            run=scs.run_scs,
            tables=scs.TABLES,
            renderers={
                "table3": PaperTable(
                    "Table 3 — SCS semantic agreement with the targets (%), few-shot LSEs vs "
                    "the baseline",
                    render.render_table3,
                )
            },
            needs=Needs(generator=True, segmenter=True, after=("fewshot", "baseline_segmenter")),
            cost=3,
        ),
        AnalysisSpec(
            name="sie",
            params=SIEParams,
            defaults=lambda config: SIEParams.for_profile(
                config.profile, config.protocol, **_reused(config)
            ),
            run=sie.run_sie,
            tables=sie.TABLES,
            renderers={
                "fig5": PaperTable(
                    "Fig 5 / Sec 4.1 — SIE vs colour-space editing on a reproducible edit set",
                    render.render_sie,
                )
            },
            needs=Needs(
                generator=True, segmenter=True, after=("fewshot", "baseline_segmenter", "scs")
            ),
            cost=2,
        ),
    )
}


def _reused(config: RunConfig) -> dict[str, Frozen]:
    """The parameters of the work SCS and SIE reuse: this run's few-shot LSEs (Table 2) and
    baseline UNet, so both read the same checkpoints instead of training their own."""
    return {
        "fewshot": analysis_params(config, "fewshot"),
        "unet": analysis_params(config, "baseline_segmenter"),
    }


def get_analysis(name: str) -> AnalysisSpec:
    if name not in ANALYSES:
        raise LinearGanError(f"unknown analysis {name!r}", f"use one of: {', '.join(ANALYSES)}")
    return ANALYSES[name]


def selected_analyses(config: RunConfig) -> list[str]:
    """The analyses ``config`` runs (None: every registered one), names checked."""
    names = list(ANALYSES) if config.analyses is None else list(dict.fromkeys(config.analyses))
    for name in [*names, *config.analysis_params]:
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
    base = spec.defaults(config)
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

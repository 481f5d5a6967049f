"""SeFa's directions of the run's generator, measured by the run's LSE (the science and the
table columns: :mod:`tasks.analyses.sefa.science`).

``n_samples`` latents are drawn in the generator's own space (seeded); each of the top
``n_directions`` directions moves them by every α of ``alphas``; the full LSE of Table 1
(reused, or fitted here when the analysis runs alone) labels every image, and so does the
reference segmenter (``reference``) on the images its detector found both before and after
the edit. One direction is one resumable unit, the supervised gradients another.

Tables (every row also carries ``profile``, ``run_id``, ``code_version``, ``created_at``):

- ``sefa_directions``: generator, segmenter, analysis_key, direction (0 = largest
  eigenvalue), eigenvalue, eigenvalue_share (of the sum over all directions), layers (the
  w+ entries edited; empty: the whole latent), vector (the unit direction), name, semantic,
  dominant_class, dominant_share, dominant_enrichment, largest_change (by the LSE), reference_name, reference_dominant_class (by
  the segmenter; empty without it), changed_at_max (pixels the LSE relabels at the largest α).
- ``sefa_semantics``: generator, segmenter, analysis_key, direction, alpha, labeller ("LSE"
  or the segmenter's name), n_images, class_index, class_name, area_before, area_after,
  area_change, area_change_rel, relabelled, iou, inside, region, changed, relabelled_px,
  changed_px.
- ``sefa_supervised``: generator, segmenter, analysis_key, class_index, class_name,
  direction, cosine (of the class's supervised direction with that SeFa direction),
  gradient_norm, span_share.

Figure ``sefa-<profile>-<key8>``: SeFa's grid, one row per direction, one column per α, each
cell the image of the first sample with its LSE mask beneath.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from lineargan.analyses.sefa import (
    LSE,
    Labeller,
    direction_rows,
    direction_summary,
    reference_labels,
    sefa_grid,
    supervised_cosines,
    supervised_gradients,
)
from lineargan.predictors import ExtractorPredictor, freeze
from lineargan.sefa import check_editable, sefa
from storage.checkpoints import load_extractor
from storage.tables import MODELS, schema
from tasks.analyses.contract import Inputs, Output
from tasks.analyses.sefa.science import SefaParams
from tasks.fit import fit_extractor
from tasks.run_context import RunContext

DIRECTIONS_TABLE = "sefa_directions"
SEMANTICS_TABLE = "sefa_semantics"
SUPERVISED_TABLE = "sefa_supervised"

_KEYED = {**MODELS, "analysis_key": pa.string()}
TABLES = {
    DIRECTIONS_TABLE: schema(
        **_KEYED,
        direction=pa.int64(),
        eigenvalue=pa.float64(),
        eigenvalue_share=pa.float64(),
        layers=pa.list_(pa.int64()),
        vector=pa.list_(pa.float64()),
        name=pa.string(),
        semantic=pa.bool_(),
        dominant_class=pa.string(),
        dominant_share=pa.float64(),
        dominant_enrichment=pa.float64(),
        largest_change=pa.string(),
        reference_name=pa.string(),
        reference_dominant_class=pa.string(),
        changed_at_max=pa.float64(),
    ),
    SEMANTICS_TABLE: schema(
        **_KEYED,
        direction=pa.int64(),
        alpha=pa.float64(),
        labeller=pa.string(),
        n_images=pa.int64(),
        class_index=pa.int64(),
        class_name=pa.string(),
        area_before=pa.float64(),
        area_after=pa.float64(),
        area_change=pa.float64(),
        area_change_rel=pa.float64(),
        relabelled=pa.float64(),
        iou=pa.float64(),
        inside=pa.float64(),
        region=pa.float64(),
        changed=pa.float64(),
        relabelled_px=pa.int64(),
        changed_px=pa.int64(),
    ),
    SUPERVISED_TABLE: schema(
        **_KEYED,
        class_index=pa.int64(),
        class_name=pa.string(),
        direction=pa.int64(),
        cosine=pa.float64(),
        gradient_norm=pa.float64(),
        span_share=pa.float64(),
    ),
}


def full_lse(ctx: RunContext, params: SefaParams, inputs: Inputs, device) -> ExtractorPredictor:
    """Table 1's full LSE when the DAG handed it over with this configuration, else fitted (or
    reused from the results root) here."""
    meta = inputs.fits.get(LSE)
    if meta is None or meta.get("fit_config") != params.lse.model_dump(mode="json"):
        meta = fit_extractor(ctx.train_url, params.lse, ctx.results_root, ctx.device)
    model, _ = load_extractor(meta["fit_dir"], device)
    return ExtractorPredictor(freeze(model), LSE)


def compute(ctx: RunContext, params: SefaParams, inputs: Inputs) -> Output:
    """SeFa's top directions of the store's generator, measured by the run's LSE."""
    assert inputs.generator is not None
    spec = inputs.train.spec
    class_names = tuple(spec.class_names)
    generator = freeze(inputs.generator)
    device = next(generator.parameters()).device
    lse = full_lse(ctx, params, inputs, device).to(device)
    fact = sefa(generator, params.layers, params.module, params.normalize, params.order)
    check_editable(generator, fact)
    n_dir = min(params.n_directions, fact.dim)
    latents = generator.sample_latents(params.n_samples, params.seed).to(device)
    label = Labeller(generator, lse, params.batch)
    segmenter = inputs.segmenter if params.reference else None
    naming = params.naming

    images, base_lse = label(latents)
    base = {"lse": base_lse}
    if segmenter is not None:
        base["ref"], base["detected"] = reference_labels(segmenter, images)

    parts = []
    for k in range(n_dir):
        rows, _ = inputs.units.load_or_compute(
            f"direction-{k}",
            lambda k=k: direction_rows(
                k, params.alphas, fact, latents, label, base, segmenter, class_names
            ),
        )
        parts.append(rows)
    semantics = pd.concat(parts, ignore_index=True)
    supervised, _ = inputs.units.load_or_compute(
        "supervised",
        lambda: supervised_cosines(
            supervised_gradients(generator, lse, fact, latents, len(class_names), params.batch),
            fact.directions[:n_dir],
            class_names,
        ),
    )

    models = {"generator": spec.generator, "segmenter": spec.segmenter}
    directions = pd.DataFrame(
        [
            {**models, **direction_summary(fact, k, semantics[semantics.direction == k], naming)}
            for k in range(n_dir)
        ]
    )
    figure = sefa_grid(
        params.alphas, fact, latents[:1], label, list(directions.name), len(class_names)
    )
    return Output(
        tables={
            DIRECTIONS_TABLE: directions,
            SEMANTICS_TABLE: semantics.assign(**models),
            SUPERVISED_TABLE: supervised.assign(**models),
        },
        figures={"sefa": figure},
    )

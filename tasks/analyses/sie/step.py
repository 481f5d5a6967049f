"""Semantic Image Editing analysis (Sec 4.1, Appx G, Fig 5; science in
:mod:`lineargan.analyses.sie`).

Held-out images (evaluation store, labelled by the reference segmenter's own detection; with an
``edit_space`` other than the store's, images drawn in that space and labelled by the reference
segmenter, since the stored latents live in the store's space) get every edit of the
reproducible edit set, planned on their reference mask. Each edit is carried out from the
image's own latent by SIE with the few-shot LSE (Table 2's N-shot LSE, first repeat), with
Table 1's full LSE (Fig 5's SIE (full LSE) arm; ``Needs.fits``), with the baseline, each
towards the edit carried out on its own mask of the original, and by the colour-space edit
with the stroke and mask of the reference's region. The reference segmenter labels every result
and scores the operations it can register; each P labels its own results. A method's rows are
kept as a partial unit once it finishes, so a killed run resumes at the next method.

Tables (every row also has ``profile``, ``run_id``, ``code_version``, ``created_at``):

- ``sie_edits`` (one row per (image, edit, method)): generator, segmenter, protocol,
  edit_space (the latent space of ``latent``), method ("SIE" or "colour"), predictor ("LSE",
  "UNet", a differentiable reference's name; "" for the colour edit), n_shot (the few-shot
  LSE's N; null for the full LSE and the others), image (ordinal), image_index (eval-store
  index; with another edit_space, the index in the pool of images drawn in it), edit (name), op,
  class_index, class_name, region_pixels (the reference's edited region), own_region_pixels
  (P's; null for the colour edit), reference_registers (whether the reference segmenter can
  register this edit) and unscored_reason (why not; "" when it can); the reference's view, null
  where it cannot register the edit: agreement_inside / agreement_outside (fraction of the
  region's / the other pixels where its mask of the edited image equals its target),
  relabel_inside / relabel_outside (fraction whose label changed from the original), miou (its
  mask of the edited image vs its target, Appx A); P's view: own_agreement_inside /
  own_agreement_outside (P's mask of the result against P's target, in P's region); the
  method's edit loss loss_initial / loss_final (P's L_s; the colour edit's L_c + L_p);
  change_inside / change_outside (mean absolute pixel change, 0-255, in the reference's
  region); latent (the edited latent, in the edit space), key.
- ``sie_summary`` (one row per method and op): generator, segmenter, protocol, edit_space,
  method, predictor, n_shot, op, edits, scored (edits the reference could register),
  unscored_reason, and the mean of each score above over the edits that have it; for
  agreement_inside and own_agreement_inside, a 95 % percentile bootstrap interval over the
  operation's edits (<score>_lo / _hi) and the paired difference to the baseline P
  (<score>_vs_baseline with _lo / _hi; the same resampled edits for every method), bootstrap
  (resamples), key.

Figure ``sie-<profile>-<key8>.png`` (Fig 5's layout, the first edit of each operation): images,
the reference's masks beneath them, each P's own mask of its result beneath those.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from lineargan.analyses.scs import choose_targets, pair_counts, pair_miou
from lineargan.analyses.sie import (
    INTERVAL_SCORES,
    SIEParams,
    agreement_scores,
    region_scores,
    summarize_sie,
)
from lineargan.cache import render_images
from lineargan.config import fit_label
from lineargan.figures import colorize, tile_grid
from lineargan.latent_search import color_loss, optimize_latents, semantic_loss
from lineargan.models import GeneratorAdapter, Segmenter
from lineargan.models.protocols import images_to_unit
from lineargan.predictors import ExtractorPredictor, freeze
from storage.checkpoints import load_extractor
from storage.tables import MODELS, schema
from tasks.analyses.contract import Inputs, Output
from tasks.analyses.semantic_predictors import (
    PredictorEntry,
    control_predictors,
    drawn_images,
    edit_generator,
    reference_labels,
    row_metadata,
)
from tasks.analyses.sie.render import method_label
from tasks.analyses.sie.science import (
    edit_set,
    own_targets,
    predicted_labels,
    reference_reasons,
)
from tasks.fit import fit_extractor
from tasks.run_context import RunContext

EDITS_TABLE = "sie_edits"
SUMMARY_TABLE = "sie_summary"
# the reference segmenter's view of an edit (null where it cannot register the edit)
REFERENCE_SCORES = (
    "agreement_inside",
    "agreement_outside",
    "relabel_inside",
    "relabel_outside",
    "miou",
)
# P's own view (null for the colour edit, which has no P), its loss, and the pixel change
OWN_SCORES = ("own_agreement_inside", "own_agreement_outside", "loss_initial", "loss_final")
PIXEL_SCORES = ("change_inside", "change_outside")
SCORES = (*REFERENCE_SCORES, *OWN_SCORES, *PIXEL_SCORES)
INTERVAL_COLUMNS = ("_lo", "_hi", "_vs_baseline", "_vs_baseline_lo", "_vs_baseline_hi")

_WHO = {
    **MODELS,
    "protocol": pa.string(),
    "edit_space": pa.string(),
    "method": pa.string(),
    "predictor": pa.string(),
    "n_shot": pa.int64(),
}
TABLES = {
    EDITS_TABLE: schema(
        **_WHO,
        image=pa.int64(),
        image_index=pa.int64(),
        edit=pa.string(),
        op=pa.string(),
        class_index=pa.int64(),
        class_name=pa.string(),
        region_pixels=pa.int64(),
        own_region_pixels=pa.int64(),
        reference_registers=pa.bool_(),
        unscored_reason=pa.string(),
        **{s: pa.float64() for s in SCORES},
        latent=pa.list_(pa.float32()),
        key=pa.string(),
    ),
    SUMMARY_TABLE: schema(
        **_WHO,
        op=pa.string(),
        edits=pa.int64(),
        scored=pa.int64(),
        unscored_reason=pa.string(),
        **{s: pa.float64() for s in SCORES},
        **{f"{s}{end}": pa.float64() for s in INTERVAL_SCORES for end in INTERVAL_COLUMNS},
        bootstrap=pa.int64(),
        key=pa.string(),
    ),
}


def full_lse(ctx: RunContext, params: SIEParams, inputs: Inputs, device) -> PredictorEntry:
    """Fig 5's SIE (full LSE) arm: Table 1's fit of ``params.lse`` when the DAG handed it over
    with this configuration (``Needs.fits``), else fitted (or reused from the results root)
    here, as SeFa does."""
    assert params.lse is not None
    meta = inputs.fits.get(fit_label(params.lse.extractor, params.lse.method))
    if meta is None or meta.get("fit_config") != params.lse.model_dump(mode="json"):
        meta = fit_extractor(ctx.train_url, params.lse, ctx.results_root, ctx.device)
    model, _ = load_extractor(meta["fit_dir"], device)
    return PredictorEntry("LSE", ExtractorPredictor(freeze(model), "LSE"), fit_dir=meta["fit_dir"])


def _method_rows(
    method: str,
    entry: PredictorEntry | None,
    edits: list[dict],
    selection,
    generator: GeneratorAdapter,
    reference: Segmenter,
    params: SIEParams,
    n_class: int,
) -> pd.DataFrame:
    """Carry out every edit with one method; score it with the reference segmenter where it
    can register the edit, and with the method's own P (its mask of the result against the
    target it optimised towards)."""
    device = next(generator.parameters()).device
    owner = np.array([e["image"] for e in edits])
    z0 = torch.from_numpy(selection.latents[owner]).float().to(device)
    size = edits[0]["target"].shape[-1]
    if entry is not None:
        own_goal, own_region = own_targets(
            predicted_labels(generator, entry.predictor, z0, size, params.batch), edits
        )
        loss = semantic_loss(entry.predictor, torch.from_numpy(own_goal).long().to(device))
    else:
        with torch.no_grad():
            originals = torch.cat(
                [generator(z0[s : s + params.batch]).image for s in range(0, len(z0), params.batch)]
            )
        strokes = images_to_unit(np.stack([e["stroke"] for e in edits]), device)
        masks = torch.from_numpy(np.stack([e["region"] for e in edits])).float().to(device)
        loss = color_loss(strokes, masks[:, None], originals)
    search = optimize_latents(generator, z0, loss, params.schedule(generator.latent_vectors))
    images = render_images(generator, search.latents, params.batch)
    labels = reference_labels(reference, images)
    goal = np.stack([e["target"] for e in edits])
    miou = pair_miou(*pair_counts(goal, labels, n_class))
    if entry is not None:
        own_after = predicted_labels(generator, entry.predictor, search.latents, size, params.batch)
    reasons = reference_reasons(edits, reference)
    rows = []
    for j, e in enumerate(edits):
        i = e["image"]
        scores = region_scores(
            labels[j], selection.labels[i], e["target"], e["region"], images[j], selection.images[i]
        )
        scores["miou"] = float(miou[j])
        if reasons[j]:  # the reference cannot see this edit: its view is no score
            scores.update({s: float("nan") for s in REFERENCE_SCORES})
        own = {"own_agreement_inside": float("nan"), "own_agreement_outside": float("nan")}
        if entry is not None:
            view = agreement_scores(own_after[j], own_goal[j], own_region[j])
            own = {f"own_{k}": v for k, v in view.items()}
        rows.append(
            {
                "method": method,
                "predictor": "" if entry is None else entry.kind,
                "n_shot": None if entry is None else entry.n_shot,
                "image": e["image"],
                "edit": e["edit"],
                "op": e["op"],
                "class_index": e["class_index"],
                "region_pixels": int(e["region"].sum()),
                "own_region_pixels": None if entry is None else int(own_region[j].sum()),
                "reference_registers": not reasons[j],
                "unscored_reason": reasons[j],
                **scores,
                **own,
                "loss_initial": float(search.initial_loss[j]),
                "loss_final": float(search.final_loss[j]),
                "latent": search.latents[j].cpu().numpy().astype(np.float32),
            }
        )
    return pd.DataFrame(rows).astype({"n_shot": "Int64", "own_region_pixels": "Int64"})


def compute(ctx: RunContext, params: SIEParams, inputs: Inputs) -> Output:
    """The SIE edit set with the few-shot LSE, Table 1's full LSE, the baseline and the colour
    edit."""
    train, evals = inputs.train, inputs.evals
    generator, store_space = edit_generator(ctx, inputs, params.edit_space)
    reference = inputs.segmenter
    assert reference is not None
    device = next(generator.parameters()).device
    if store_space:  # edit the store's held-out images
        image_ids = choose_targets(
            evals.spec.n, evals.detected_flags(), params.images, "detected", params.seed + 1
        )
        selection = evals.read_selection(image_ids, images=True)
    else:  # stored latents are in another space: draw the images in the edit space
        image_ids, selection = drawn_images(
            generator, reference, params.images, params.seed + 1, batch=params.batch
        )
    edits = edit_set(selection.labels, selection.images, params)
    entries = control_predictors(
        ctx,
        train,
        params.fewshot,
        (params.n_shot,),
        1,
        params.fit_method,
        params.baseline,
        params.unet,
        reference,
        device,
    )
    if params.lse is not None:  # after the few-shot LSEs, before the baseline
        shots = sum(e.n_shot is not None for e in entries)
        entries.insert(shots, full_lse(ctx, params, inputs, device))
    methods: list[tuple[str, PredictorEntry | None]] = [("SIE", e) for e in entries]
    methods.append(("colour", None))
    class_names = evals.spec.class_names
    partial = inputs.units
    frames = []
    for method, entry in methods:
        unit = f"{method}-{entry.slug}" if entry is not None else method
        rows, seconds = partial.load_or_compute(
            unit,
            lambda method=method, entry=entry: _method_rows(
                method, entry, edits, selection, generator, reference, params, len(class_names)
            ),
        )
        if seconds is not None:
            print(
                f"sie {unit}: {len(rows)} edits, {int(rows['reference_registers'].sum())} "
                f"scored by {reference.name}: agreement inside "
                f"{100 * rows['agreement_inside'].mean():.1f}% / outside "
                f"{100 * rows['agreement_outside'].mean():.1f}%, {seconds:.0f} s"
            )
        frames.append(rows)
    meta = row_metadata(train, params.protocol, generator.latent_space)
    rows = pd.concat(frames, ignore_index=True)
    rows = rows.assign(
        image_index=image_ids[rows["image"].to_numpy()],
        class_name=[class_names[k] for k in rows["class_index"]],
        **meta,
    )
    summary = summarize_sie(rows, SCORES, params.bootstrap, params.seed).assign(**meta)
    figure = _figure(generator, entries, edits, selection, rows, params, reference, class_names)
    return Output(
        tables={EDITS_TABLE: rows, SUMMARY_TABLE: summary},
        figures={"sie": figure},
        fits=[e.fit_dir for e in entries],
    )


def figure_edits(edits: list[dict]) -> list[int]:
    """The edits Fig 5 shows: the first of each operation (one row block per operation keeps
    the figure a readable size at any number of edited images)."""
    first: dict[str, int] = {}
    for j, e in enumerate(edits):
        first.setdefault(e["op"], j)
    return list(first.values())


def _figure(generator, entries, edits, selection, rows, params, reference, class_names):
    """Fig 5's layout, three rows per shown edit (:func:`figure_edits`): the images (original,
    colour stroke, then the colour edit and each SIE result), the reference segmenter's masks
    beneath them (original, the target, then its mask of each result) and each P's own mask
    of its SIE result beneath that (what P believes it made). Results are regenerated from
    the stored latents."""
    n_class = len(class_names)
    shown = figure_edits(edits)
    methods = rows.drop_duplicates(["method", "predictor", "n_shot"])
    order = [m for m in methods.itertuples(index=False) if m.method == "colour"]
    order += [m for m in methods.itertuples(index=False) if m.method != "colour"]
    by_label = {method_label("SIE", e.kind, e.n_shot): e for e in entries}
    ids = [edits[j]["image"] for j in shown]
    names = [edits[j]["edit"] for j in shown]
    results = []
    for m in order:
        label = method_label(m.method, m.predictor, m.n_shot)
        mine = rows[
            (rows["method"] == m.method)
            & (rows["predictor"] == m.predictor)
            & (rows["n_shot"].fillna(0) == (0 if pd.isna(m.n_shot) else m.n_shot))
        ].set_index(["image", "edit"])
        latents = torch.tensor(
            np.stack([mine.loc[(i, n), "latent"] for i, n in zip(ids, names, strict=True)]),
            dtype=torch.float32,
        )
        images = render_images(generator, latents, params.batch)
        masks = reference_labels(reference, images)
        own = None
        if label in by_label:
            device = next(generator.parameters()).device
            size = images.shape[1]
            own = predicted_labels(
                generator, by_label[label].predictor, latents.to(device), size, params.batch
            )
        results.append((label, images, masks, own))
    blank = np.full_like(selection.images[0], 255)
    grid, titles = [], []
    for r, j in enumerate(shown):
        e, i = edits[j], edits[j]["image"]
        grid.append([selection.images[i], e["stroke"], *(res[1][r] for res in results)])
        grid.append(
            [
                colorize(selection.labels[i], n_class),
                colorize(e["target"], n_class),
                *(colorize(res[2][r], n_class) for res in results),
            ]
        )
        grid.append(
            [blank, blank]
            + [blank if res[3] is None else colorize(res[3][r], n_class) for res in results]
        )
        name = f"{e['op']} {class_names[e['class_index']]} (image {i})"
        titles += [name, f"  {reference.name}'s masks", "  P's own masks"]
    columns = ["original", "stroke / target", *(res[0] for res in results)]
    return tile_grid(grid, titles, columns)

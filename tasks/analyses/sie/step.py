"""Semantic Image Editing analysis (Sec 4.1, Appx G, Fig 5; science in
:mod:`lineargan.analyses.sie`).

Held-out images (evaluation store, labelled by the reference segmenter's own detection; with an
``edit_space`` other than the store's, images drawn in that space and labelled by the reference
segmenter, since the stored latents live in the store's space) get every edit of the reproducible edit set applied to their reference mask. Each edit is carried
out three ways from the image's own latent: SIE with the few-shot LSE (Table 2's N-shot LSE,
first repeat), SIE with the baseline UNet, and the colour-space edit with the stroke and mask
of the same region. The reference segmenter labels every result. A method's rows are kept as
a partial unit once it finishes, so a killed run resumes at the next method.

Tables (every row also has ``profile``, ``run_id``, ``code_version``, ``created_at``):

- ``sie_edits`` (one row per (image, edit, method)): generator, segmenter, protocol,
  edit_space (the latent space of ``latent``), method ("SIE" or "colour"), predictor ("LSE",
  "UNet"; "" for the colour edit), n_shot (null unless LSE), image (ordinal), image_index
  (eval-store index; with another edit_space, the index in the pool of images drawn in it),
  edit (name), op, class_index, class_name, region_pixels, agreement_inside / agreement_outside (fraction of the edited
  region's / the other pixels where the reference mask of the edited image equals the target),
  relabel_inside / relabel_outside (fraction whose reference label changed from the original),
  change_inside / change_outside (mean absolute pixel change, 0-255), miou (reference mask of
  the edited image vs the target, Appx A), loss_initial / loss_final (the method's edit loss),
  latent (the edited latent, in the edit space), key.
- ``sie_summary``: generator, segmenter, protocol, edit_space, method, predictor, n_shot, op
  ("all" for every edit), edits, and the mean of each score above, key.

Figure ``sie-<profile>-<key8>.png`` (Fig 5's layout): original, colour stroke, original and
target masks, then the colour edit and each SIE result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from lineargan.analyses.scs import choose_targets, pair_counts, pair_miou
from lineargan.analyses.sie import (
    SIEParams,
    region_scores,
    summarize_sie,
)
from lineargan.cache import render_images
from lineargan.figures import colorize, tile_grid
from lineargan.latent_search import color_loss, optimize_latents, semantic_loss
from lineargan.models import GeneratorAdapter, Segmenter
from lineargan.models.protocols import images_to_unit
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
from tasks.analyses.sie.science import edit_set, fused_targets
from tasks.run_context import RunContext

EDITS_TABLE = "sie_edits"
SUMMARY_TABLE = "sie_summary"
SCORES = (
    "agreement_inside",
    "agreement_outside",
    "relabel_inside",
    "relabel_outside",
    "change_inside",
    "change_outside",
    "miou",
)

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
        **{s: pa.float64() for s in SCORES},
        loss_initial=pa.float64(),
        loss_final=pa.float64(),
        latent=pa.list_(pa.float32()),
        key=pa.string(),
    ),
    SUMMARY_TABLE: schema(
        **_WHO,
        op=pa.string(),
        edits=pa.int64(),
        **{s: pa.float64() for s in SCORES},
        key=pa.string(),
    ),
}


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
    """Carry out every edit with one method and score it with the reference segmenter."""
    device = next(generator.parameters()).device
    owner = np.array([e["image"] for e in edits])
    z0 = torch.from_numpy(selection.latents[owner]).float().to(device)
    if entry is not None:
        goal = fused_targets(generator, entry.predictor, z0, edits, params.batch)
        loss = semantic_loss(entry.predictor, goal)
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
    rows = []
    for j, e in enumerate(edits):
        i = e["image"]
        scores = region_scores(
            labels[j], selection.labels[i], e["target"], e["region"], images[j], selection.images[i]
        )
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
                **scores,
                "miou": float(miou[j]),
                "loss_initial": float(search.initial_loss[j]),
                "loss_final": float(search.final_loss[j]),
                "latent": search.latents[j].cpu().numpy().astype(np.float32),
            }
        )
    return pd.DataFrame(rows).astype({"n_shot": "Int64"})


def compute(ctx: RunContext, params: SIEParams, inputs: Inputs) -> Output:
    """The SIE edit set with the few-shot LSE, the baseline UNet and the colour edit."""
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
                f"sie {unit}: {len(rows)} edits, agreement inside "
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
    summary = summarize_sie(rows, SCORES).assign(**meta)
    figure = _figure(generator, edits, selection, rows, params, len(class_names))
    return Output(
        tables={EDITS_TABLE: rows, SUMMARY_TABLE: summary},
        figures={"sie": figure},
        fits=[e.fit_dir for e in entries],
    )


def _figure(generator, edits, selection, rows, params, n_class):
    """Fig 5's layout, one row per edit: original, colour stroke, original and target masks,
    the colour edit, then each SIE result (regenerated from the stored latents)."""
    methods = rows.drop_duplicates(["method", "predictor", "n_shot"])
    order = [m for m in methods.itertuples(index=False) if m.method == "colour"]
    order += [m for m in methods.itertuples(index=False) if m.method != "colour"]
    columns = ["original", "colour stroke", "mask", "target mask"]
    results = []
    for m in order:
        mine = rows[
            (rows["method"] == m.method)
            & (rows["predictor"] == m.predictor)
            & (rows["n_shot"].fillna(0) == (0 if pd.isna(m.n_shot) else m.n_shot))
        ]
        latents = torch.tensor(np.stack(mine["latent"].to_numpy()), dtype=torch.float32)
        results.append(render_images(generator, latents, params.batch))
        columns.append(
            "colour edit"
            if m.method == "colour"
            else f"SIE ({m.n_shot}-shot LSE)"
            if m.predictor == "LSE"
            else f"SIE ({m.predictor})"
        )
    grid, titles = [], []
    for j, e in enumerate(edits):
        i = e["image"]
        tiles = [
            selection.images[i],
            e["stroke"],
            colorize(selection.labels[i], n_class),
            colorize(e["target"], n_class),
        ]
        grid.append(tiles + [r[j] for r in results])
        titles.append(f"image {i}: {e['edit']}")
    return tile_grid(grid, titles, columns)

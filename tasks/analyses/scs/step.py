"""Semantic-Conditional Sampling analysis (Table 3, Appx H; science in
:mod:`lineargan.analyses.scs`).

Targets are the reference segmenter's masks of held-out images (the evaluation store; by
default among the images its own detector labelled), or a user's folder of masks
(``target_masks``: the paper's face protocol uses human-annotated CelebAMask-HQ masks),
mapped to the run's classes and resized to the generator's resolution. For every predictor
P — each few-shot LSE of Table 2 (N, repeat) and the baseline UNet — every (target, sample) pair is sampled by
Algorithm 3 from the same seeded candidates, and both the chosen initial image and the final
image are labelled by the reference segmenter P* to score the agreement with the target. A
predictor's rows are kept as a partial unit as soon as it finishes, so a killed run resumes at
the next predictor.

Tables (every row also has ``profile``, ``run_id``, ``code_version``, ``created_at``):

- ``scs_samples`` (one row per (predictor, n_shot, repeat, target, sample)): generator,
  segmenter, protocol, edit_space (the latent space of ``latent``), predictor ("LSE", "UNet (surrogate)" or
  "<segmenter> (reference)"), n_shot / repeat (null for the baseline),
  target (0-based ordinal), target_index (eval-store index; with ``target_masks``, the
  mask's position in the folder's file-name order), target_file (that mask's file name; null
  for eval-store targets), sample, candidate (index of the chosen initial latent), n_init, p_pixels_initial (pixels where P's mask of the initial
  image equals the target, fraction), loss_initial / loss_final (cross-entropy under P),
  agreement_initial / agreement (per-pair mIoU of P*'s mask of the initial / final image with
  the target: the terms of Eq. 7), inter / union (per-class pixel counts of target ∩ / ∪ P*'s
  mask of the final image) and predicted (per-class pixel counts of that mask): every
  aggregation is computed from these, latent (the sample's final latent: G(latent) is the
  sample), key.
- ``scs_summary`` (Table 3): generator, segmenter, protocol, edit_space, predictor, n_shot, repeats,
  pairs, agreement (mean over repeats of Eq. 7), max_dev, authors (mean over repeats of the
  authors' ``aggregate_iou``: per class over the pairs where it occurs, then over classes),
  authors_max_dev, pooled (Σ∩/Σ∪ per class over all pairs, then over classes: neither
  protocol's), pooled_max_dev, agreement_initial (Eq. 7 of the chosen candidates), headline
  ("paper" or "authors": the agreement the protocol reports), headline_lo / headline_hi (its
  95 % bootstrap interval over targets), vs_baseline / vs_baseline_lo / vs_baseline_hi (its
  difference to the baseline's, with the paired interval: the same resamples for every
  predictor), bootstrap (resamples), key.

Figure ``scs-<profile>-<key8>.png`` (Fig 6's layout): one row per target (the first
``figure_targets``), its mask first, then each predictor's samples (first repeat of each N),
each with the reference segmenter's mask of it beneath.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from lineargan.analyses.scs import (
    SCSParams,
    choose_targets,
    class_pixels,
    conditional_sample,
    pair_counts,
    pair_miou,
    summarize_scs,
)
from lineargan.cache import render_images
from lineargan.figures import colorize, tile_grid
from lineargan.masks import read_target_masks
from lineargan.models import GeneratorAdapter, Segmenter
from storage.tables import MODELS, schema
from tasks.analyses.contract import Inputs, Output
from tasks.analyses.semantic_predictors import (
    PredictorEntry,
    control_predictors,
    edit_generator,
    reference_labels,
    row_metadata,
)
from tasks.run_context import RunContext

SAMPLES_TABLE = "scs_samples"
SUMMARY_TABLE = "scs_summary"

_WHO = {
    **MODELS,
    "protocol": pa.string(),
    "edit_space": pa.string(),
    "predictor": pa.string(),
    "n_shot": pa.int64(),
}
TABLES = {
    SAMPLES_TABLE: schema(
        **_WHO,
        repeat=pa.int64(),
        target=pa.int64(),
        target_index=pa.int64(),
        target_file=pa.string(),
        sample=pa.int64(),
        candidate=pa.int64(),
        n_init=pa.int64(),
        p_pixels_initial=pa.float64(),
        loss_initial=pa.float64(),
        loss_final=pa.float64(),
        agreement_initial=pa.float64(),
        agreement=pa.float64(),
        inter=pa.list_(pa.int64()),
        union=pa.list_(pa.int64()),
        predicted=pa.list_(pa.int64()),
        latent=pa.list_(pa.float32()),
        key=pa.string(),
    ),
    SUMMARY_TABLE: schema(
        **_WHO,
        repeats=pa.int64(),
        pairs=pa.int64(),
        agreement=pa.float64(),
        max_dev=pa.float64(),
        authors=pa.float64(),
        authors_max_dev=pa.float64(),
        pooled=pa.float64(),
        pooled_max_dev=pa.float64(),
        agreement_initial=pa.float64(),
        headline=pa.string(),
        headline_lo=pa.float64(),
        headline_hi=pa.float64(),
        vs_baseline=pa.float64(),
        vs_baseline_lo=pa.float64(),
        vs_baseline_hi=pa.float64(),
        bootstrap=pa.int64(),
        key=pa.string(),
    ),
}


def reference_counts(
    generator: GeneratorAdapter,
    reference: Segmenter,
    latents: torch.Tensor,
    masks: np.ndarray,
    n_class: int,
    batch: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P*'s per-class ∩ / ∪ of G(latents[i]) with ``masks[i]`` and its per-class pixels,
    (len(latents), n_class) each, ``batch`` images at a time (only the counts are kept: at
    1024² a thousand label maps would not fit in memory)."""
    inter, union, predicted = (np.zeros((len(latents), n_class), np.int64) for _ in range(3))
    for s in range(0, len(latents), batch):
        part = slice(s, s + batch)
        labels = reference_labels(reference, render_images(generator, latents[part], batch))
        inter[part], union[part] = pair_counts(masks[part], labels, n_class)
        predicted[part] = class_pixels(labels, n_class)
    return inter, union, predicted


def _sample_rows(
    entry: PredictorEntry,
    generator: GeneratorAdapter,
    reference: Segmenter,
    targets: torch.Tensor,
    target_ids: np.ndarray,
    params: SCSParams,
    n_class: int,
) -> pd.DataFrame:
    """Algorithm 3 for every (target, sample) pair under one predictor, scored by P*."""
    pairs = [(t, s) for t in range(len(target_ids)) for s in range(params.samples)]
    run = conditional_sample(generator, entry.predictor, targets, pairs, params)
    owner = np.array([t for t, _ in pairs])
    masks = targets.cpu().numpy()

    def score(latents: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return reference_counts(generator, reference, latents, masks[owner], n_class, params.batch)

    inter0, union0, _ = score(run.initial)
    inter, union, predicted = score(run.final)
    return pd.DataFrame(
        {
            "predictor": entry.kind,
            "n_shot": entry.n_shot,
            "repeat": entry.repeat,
            "target": owner,
            "target_index": target_ids[owner],
            "sample": [s for _, s in pairs],
            "candidate": run.chosen.numpy(),
            "n_init": params.candidates(),
            "p_pixels_initial": run.initial_pixels.numpy(),
            "loss_initial": run.loss_initial.numpy(),
            "loss_final": run.loss_final.numpy(),
            "agreement_initial": pair_miou(inter0, union0),
            "agreement": pair_miou(inter, union),
            "inter": list(inter),
            "union": list(union),
            "predicted": list(predicted),
            "latent": list(run.final.numpy().astype(np.float32)),
        }
    ).astype({"n_shot": "Int64", "repeat": "Int64"})


def compute(ctx: RunContext, params: SCSParams, inputs: Inputs) -> Output:
    """Table 3: SCS with every few-shot LSE and the baseline, scored by the reference
    segmenter (resumes after the last finished predictor)."""
    train, evals = inputs.train, inputs.evals
    # the protocol's space (authors: z) falls back to the store's where the generator has no
    # other; an explicit edit_space must be taken (the run checked it before any work)
    generator, _ = edit_generator(
        ctx, inputs, params.space(), required=params.edit_space is not None
    )
    reference = inputs.segmenter
    assert reference is not None
    device = next(generator.parameters()).device
    target_ids, target_labels, target_files = _targets(params, evals, generator.resolution)
    targets = torch.from_numpy(target_labels).long().to(device)
    entries = control_predictors(
        ctx,
        train,
        params.fewshot,
        params.shots,
        params.repeats,
        params.fit_method,
        params.baseline,
        params.unet,
        inputs.segmenter,
        device,
    )
    partial = inputs.units
    n_class = len(evals.spec.class_names)
    frames = []
    for j, entry in enumerate(entries, 1):
        rows, seconds = partial.load_or_compute(
            entry.slug,
            lambda entry=entry: _sample_rows(
                entry, generator, reference, targets, target_ids, params, n_class
            ),
        )
        if seconds is not None:  # one line per predictor: the run's log and the terminal
            print(
                f"scs {j}/{len(entries)} {entry.slug}: Eq. 7 agreement "
                f"{100 * rows['agreement'].mean():.1f}% (initial candidates "
                f"{100 * rows['agreement_initial'].mean():.1f}%), {len(rows)} samples, "
                f"{seconds:.0f} s"
            )
        frames.append(rows)
    samples = pd.concat(frames, ignore_index=True)
    samples["target_file"] = [target_files[t] if target_files else None for t in samples["target"]]
    meta = row_metadata(train, params.protocol, generator.latent_space)
    samples = samples.assign(**meta)
    summary = summarize_scs(samples, params.protocol, params.bootstrap, params.seed).assign(**meta)
    figure = _figure(generator, reference, entries, samples, target_labels, params, n_class)
    return Output(
        tables={SAMPLES_TABLE: samples, SUMMARY_TABLE: summary},
        figures={"scs": figure},
        fits=[e.fit_dir for e in entries],
    )


def _targets(
    params: SCSParams, evals, resolution: int
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """The targets: their indices (in the eval store, or in the folder's file order), their
    (T, H, W) labels in the run's classes, and their file names (None: eval-store targets)."""
    if params.target_masks is None:
        ids = choose_targets(
            evals.spec.n, evals.detected_flags(), params.targets, params.target_source, params.seed
        )
        return ids, evals.read_selection(ids, images=False).labels, None
    masks, files = read_target_masks(params.target_masks, evals.spec.class_names, resolution)
    shown = min(params.targets, len(files))
    return np.arange(shown), np.stack(masks[:shown]), files[:shown]


def _figure(generator, reference, entries, samples, target_labels, params, n_class):
    """Fig 6's layout: one row per target (the first ``figure_targets``); the target mask
    first, then each predictor's samples side by side (first repeat of each N), every
    sample regenerated from its stored latent with the reference's mask of it beneath."""
    shown = min(params.figure_targets, len(target_labels))
    blocks, columns = [], ["target"]
    for entry in entries:
        if entry.repeat not in (None, 0):
            continue
        mine = samples[
            (samples["predictor"] == entry.kind)
            & (samples["n_shot"].fillna(0) == (entry.n_shot or 0))
            & (samples["repeat"].fillna(0) == 0)
            & (samples["target"] < shown)
        ].sort_values(["target", "sample"])
        latents = torch.tensor(np.stack(mine["latent"].to_numpy()), dtype=torch.float32)
        images = render_images(generator, latents, params.batch)
        masks = [colorize(m, n_class) for m in reference_labels(reference, images)]
        blocks.append(
            (mine["target"].to_numpy(), [np.vstack(p) for p in zip(images, masks, strict=True)])
        )
        columns += [
            entry.predictor.label if params.samples == 1 else f"{entry.predictor.label} #{s}"
            for s in range(params.samples)
        ]
    rows = []
    for t in range(shown):
        rows.append(
            [colorize(target_labels[t], n_class)]
            + [
                tile
                for owner, tiles in blocks
                for o, tile in zip(owner, tiles, strict=True)
                if o == t
            ]
        )
    return tile_grid(rows, [f"target {t}" for t in range(shown)], columns)

"""The predictors P that SCS and SIE put in the loop, the reference segmenter P* that scores
them, and the generator they optimise through: Table 2's few-shot LSEs (the same checkpoints,
through the same fit-or-reuse routine), the baseline (the reference segmenter itself when it is
differentiable, as in the paper; else a surrogate UNet trained on the cache to mimic it), and
the store's generator in the chosen ``edit_space``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lineargan.analyses.fewshot import FewShotParams
from lineargan.analyses.scs import choose_targets
from lineargan.baseline import UNetParams
from lineargan.cache import SampleBatch, render_images
from lineargan.config import FitMethod
from lineargan.errors import LinearGanError
from lineargan.models import GeneratorAdapter, Segmenter
from lineargan.predictors import (
    ExtractorPredictor,
    SegmenterPredictor,
    SemanticPredictor,
    freeze,
)
from storage.checkpoints import load_extractor
from storage.feature_store import FeatureStore
from tasks.analyses.contract import Inputs
from tasks.analyses.fewshot.science import fewshot_runs
from tasks.analyses.fewshot.step import fit_fewshot
from tasks.baseline import unet_or_reuse
from tasks.run_context import RunContext
from tasks.store_models import store_generator, store_takes_latent_space

# The surrogate baseline's name in tables and figures: it is not the evaluation segmenter the
# paper's baseline is, but a UNet trained to mimic it (the reference has no gradient).
BASELINE = "UNet (surrogate)"
REUSED = ("fewshot", "baseline_segmenter")  # the analyses whose checkpoints SCS and SIE reuse


@dataclass
class PredictorEntry:
    """One P of a table: ``kind`` "LSE" (few-shot, with ``n_shot`` and ``repeat``), "UNet
    (surrogate)" or the reference segmenter's "<name> (reference)"; ``name``: a file-name-safe
    name of a baseline."""

    kind: str
    predictor: SemanticPredictor
    n_shot: int | None = None
    repeat: int | None = None
    fit_dir: str = ""
    name: str = ""

    @property
    def slug(self) -> str:
        """A file-name-safe unique name (partial results, figure rows)."""
        return self.name if self.n_shot is None else f"lse-n{self.n_shot}-r{self.repeat}"


def fewshot_predictors(
    ctx: RunContext,
    train: FeatureStore,
    fewshot: FewShotParams,
    shots: tuple[int, ...],
    repeats: int,
    method: FitMethod,
    device: torch.device,
) -> list[PredictorEntry]:
    """The first ``repeats`` few-shot LSEs of each N in ``shots`` (trained now unless Table 2
    already trained them with the same parameters)."""
    missing = sorted(set(shots) - set(fewshot.shots))
    if missing or method not in fewshot.methods or repeats > fewshot.repeats:
        raise LinearGanError(
            f"few-shot LSEs N={missing or list(shots)} / {repeats} repeats / {method} are not "
            f"among Table 2's (N={list(fewshot.shots)}, {fewshot.repeats} repeats, "
            f"{list(fewshot.methods)})",
            "choose shots, repeats and fit_method within the fewshot analysis parameters",
        )
    out = []
    for run in fewshot_runs(fewshot, train.spec.n):
        run_method, n_shot, _, repeat, _ = run
        if run_method != method or n_shot not in shots or repeat >= repeats:
            continue
        meta = fit_fewshot(ctx, fewshot, train, run)
        model, _ = load_extractor(meta["fit_dir"], device)
        predictor = ExtractorPredictor(freeze(model), f"{n_shot}-shot LSE")
        out.append(PredictorEntry("LSE", predictor, n_shot, repeat, meta["fit_dir"]))
    return out


def baseline_predictor(
    ctx: RunContext, train: FeatureStore, params: UNetParams, device: torch.device
) -> PredictorEntry:
    """The surrogate baseline UNet (trained on the training store's image/label pairs, or
    reused)."""
    segmenter, meta = unet_or_reuse(train, ctx.train_url, params, ctx.results_root, str(device))
    predictor = SegmenterPredictor(segmenter, BASELINE).to(device)
    freeze(predictor)
    return PredictorEntry(BASELINE, predictor, fit_dir=meta["fit_dir"], name="unet")


def edit_generator(
    ctx: RunContext, inputs: Inputs, edit_space: str | None, required: bool = True
) -> tuple[GeneratorAdapter, bool]:
    """The frozen generator SCS/SIE optimise through, and whether it is the store's own
    (``edit_space`` None or the store's space) rather than the same weights taking latents of
    ``edit_space`` (e.g. the authors' mixwp for a trunc-wp store). ``required`` False: a
    generator with no latent spaces (the DCGAN, whose only space is z; a denoiser's x_t) uses
    its own instead of refusing, as a protocol's preferred space asks."""
    assert inputs.generator is not None
    if edit_space is None or edit_space == inputs.generator.latent_space:
        return freeze(inputs.generator), True
    if not required and not store_takes_latent_space(ctx.train_store()):
        return freeze(inputs.generator), True
    device = str(next(inputs.generator.parameters()).device)
    return freeze(store_generator(ctx.train_store(), device, latent_space=edit_space)), False


def drawn_images(
    generator: GeneratorAdapter,
    reference: Segmenter,
    n: int,
    seed: int,
    source: str = "detected",
    batch: int = 64,
) -> tuple[np.ndarray, SampleBatch]:
    """``n`` images drawn in the generator's own latent space and labelled by P* (SIE in an
    ``edit_space`` other than the store's, whose stored latents live in another space): a
    pool of 4n seeded draws, from which ``n`` are chosen as the store's images are (among the
    detected ones by default). Returns their indices in the pool and the images."""
    pool = generator.sample_latents(4 * n, seed)
    images = render_images(generator, pool, batch)
    out = reference.segment(images)
    detected = out.detected if len(out.detected) else np.ones(len(images), bool)
    try:
        ids = choose_targets(len(images), detected, n, source, seed)
    except LinearGanError:  # its message speaks of the eval store
        raise LinearGanError(
            f"only {int(detected.sum())} of {len(images)} images drawn in latent space "
            f"{generator.latent_space!r} were detected by {reference.name}, {n} are needed",
            "edit fewer images, or leave edit_space unset to edit the store's images",
        ) from None
    return ids, SampleBatch(
        latents=pool[ids].cpu().numpy(),
        images=images[ids],
        labels=out.labels[ids],
        detected=detected[ids],
        features=[],
    )


def reference_labels(segmenter: Segmenter, images: np.ndarray) -> np.ndarray:
    """P*'s labels of uint8 images (the reference segmenter scores every SCS/SIE result)."""
    return segmenter.segment(images).labels


def control_predictors(
    ctx: RunContext,
    train: FeatureStore,
    fewshot: FewShotParams,
    shots: tuple[int, ...],
    repeats: int,
    method: FitMethod,
    baseline: str,
    unet: UNetParams,
    reference: Segmenter,
    device: torch.device,
) -> list[PredictorEntry]:
    """SCS's and SIE's predictors: the few-shot LSEs, then the baseline: ``"reference"`` (the
    run's own segmenter, which must be differentiable: the paper's baseline, and where a
    user's network plugs in), ``"unet"`` (the surrogate trained on the cache) or ``"none"``."""
    entries = fewshot_predictors(ctx, train, fewshot, shots, repeats, method, device)
    if baseline == "unet":
        entries.append(baseline_predictor(ctx, train, unet, device))
    elif baseline == "reference":
        # a one-line error unless the run's segmenter is a DifferentiableSegmenter
        label = f"{reference.name} (reference)"
        predictor = SegmenterPredictor(reference, label)
        reference.to(device)
        entries.append(PredictorEntry(label, freeze(predictor), name="reference"))
    return entries


def row_metadata(train: FeatureStore, protocol: str, edit_space: str) -> dict:
    """The columns every SCS/SIE row carries: models, protocol, the latent space the recorded
    latents live in (the runner adds the run metadata and the analysis key)."""
    return {
        "generator": train.spec.generator,
        "segmenter": train.spec.segmenter,
        "protocol": protocol,
        "edit_space": edit_space,
    }

"""Semantic Image Editing (Sec 4.1, Appx G, Algorithm 2, Fig 5): the science, no I/O.

A user edits an image's semantic mask; SIE finds the latent near the image's own whose
prediction P(G(z)) matches the edited mask:

    SIE:          L = L_s + 1e-3·L_n + 1e-3·L_z
    colour edit:  L = L_c + L_p + 1e-3·L_n + 1e-3·L_z

(the appendix prints these two totals swapped; the text and the authors' code agree on the
above). Adam, 50 steps; learning rate 0.01 in the paper, 0.002 in the authors' code
(``protocol``), whose L_z is ‖z‖²/L for a latent of L stacked vectors (mixwp: one z per
synthesis layer; ``manipulation/sie.py``).

To measure editing rather than show it, the edits are generated: a reproducible set of
operations on a mask (enlarge a part, move it, remove it, add one), planned on the reference
segmenter's mask of held-out images (:func:`plan_edit`: the class by area rank, the class it
grows into or leaves behind, an added disc's place) and carried out on any view of the image
(:func:`edit_mask`). With P a predictor, SIE optimises toward the edit carried out on P's own
mask of the original (the paper's usage: the user edits the mask the LSE shows), so the target
stays coherent where P disagrees with the reference. The colour-edit baseline gets the
reference's edited region as its mask M, painted with the colour each target class has in the
original image (the stroke a user would draw).

Each edit is scored by two evaluators, each against the edit carried out on its own mask of
the original: the reference segmenter (agreement with the target inside the region: did the
edit happen? outside it: was the rest kept? and the fraction of pixels whose label changed)
and P itself (what P believes it made). An evaluator scores an operation only if its masks can
show it (:func:`unregistrable`): the default dlib segmenter draws every part from 68 landmarks
on every image, so a removed (or added) part can never register in its masks.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, PositiveInt

from lineargan.analyses.fewshot import FewShotParams
from lineargan.analyses.scs import paired_intervals, resample_weights
from lineargan.baseline import (
    BASELINE_HELP,
    BaselineName,
    UNetParams,
    default_baseline,
    is_baseline_predictor,
)
from lineargan.config import FitConfig, FitMethod, Frozen, ProtocolName, RunConfig
from lineargan.latent_search import EditSpace, LatentSchedule

EditOp = Literal["enlarge", "move", "remove", "add"]
PROTOCOL_SIE_LR = {"paper": 0.01, "authors": 0.002}


class EditSpec(Frozen):
    """One mask edit: ``op`` on the present class of area rank ``class_rank`` (0 = the
    largest non-background class; faces: skin), by ``amount`` pixels (dilation radius, shift,
    or radius of the added disc)."""

    op: EditOp
    class_rank: int = Field(1, ge=0)
    amount: PositiveInt = 2

    @property
    def name(self) -> str:
        return f"{self.op}-rank{self.class_rank}-{self.amount}px"


DEFAULT_EDITS = (
    EditSpec(op="enlarge", class_rank=1, amount=2),
    EditSpec(op="move", class_rank=1, amount=3),
    EditSpec(op="remove", class_rank=2),
    EditSpec(op="add", class_rank=2, amount=3),
)


class SIEParams(EditSpace):
    """The edit set and the optimisation. ``lr`` None: the protocol's learning rate."""

    protocol: ProtocolName = "paper"
    images: PositiveInt = Field(8, description="held-out images edited (eval store, detected)")
    edits: tuple[EditSpec, ...] = DEFAULT_EDITS
    steps: int = Field(50, ge=0)
    lr: float | None = Field(None, gt=0)
    neighbor_weight: float = Field(1e-3, ge=0)
    prior_weight: float = Field(1e-3, ge=0)
    n_shot: PositiveInt = Field(8, description="the few-shot LSE used (first repeat of Table 2)")
    fit_method: FitMethod = Field(
        "converged", description="which few-shot LSE of Table 2 (see SCSParams.fit_method)"
    )
    baseline: BaselineName = Field("unet", description=BASELINE_HELP)
    lse: FitConfig | None = Field(
        FitConfig(extractor="LSE", method="converged"),
        description="the full LSE of Fig 5's SIE (full LSE) arm: Table 1's converged LSE, "
        "reused (None: no such arm)",
    )
    fewshot: FewShotParams = FewShotParams()
    unet: UNetParams = UNetParams()
    seed: int = Field(0, ge=0)
    batch: PositiveInt = 64
    bootstrap: PositiveInt = Field(
        1000, description="resamples of each operation's edits for the 95 % intervals (paired)"
    )

    def schedule(self, latent_vectors: int = 1) -> LatentSchedule:
        """The Adam run for latents stacking ``latent_vectors`` vectors each (the generator's
        ``latent_vectors``): the authors' code divides L_z by it (``priorloss = 1e-3 * (z **
        2).sum() / z.shape[0]``, one z per layer in mixwp), the paper's L_z = ‖z‖² does not."""
        divisor = latent_vectors if self.protocol == "authors" else 1
        return LatentSchedule(
            steps=self.steps,
            lr=self.lr if self.lr is not None else PROTOCOL_SIE_LR[self.protocol],
            neighbor_weight=self.neighbor_weight,
            prior_weight=self.prior_weight / divisor,
            batch=self.batch,
        )

    @classmethod
    def for_run(cls, config: RunConfig, after: Mapping[str, Frozen] | None = None) -> SIEParams:
        """``paper``: 8 images × 4 edits; ``quick``: 3 images; ``smoke``: 1 image, 5 steps,
        the largest few-shot N of the smoke profile. ``after``: as for SCS
        (:meth:`~lineargan.analyses.scs.SCSParams.for_run`)."""
        profile, after = config.profile, after or {}
        fewshot = after.get("fewshot") or FewShotParams.for_run(config)
        unet = after.get("baseline_segmenter") or UNetParams.for_run(config)
        sizes = {"smoke": dict(images=1, steps=5), "quick": dict(images=3), "paper": {}}[profile]
        n_shot = 8 if 8 in fewshot.shots else max(fewshot.shots)
        lse = config.fit("LSE", "converged")  # Table 1's full LSE, so the run's fit is reused
        return cls(
            protocol=config.protocol,
            fewshot=fewshot,
            unet=unet,
            n_shot=n_shot,
            baseline=default_baseline(config),
            lse=lse,
            **sizes,
        )


# -- mask edits ---------------------------------------------------------------------------------


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disc of ``radius`` pixels (no SciPy needed for a few pixels)."""
    if radius <= 0:
        return mask.copy()
    h, w = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                out |= padded[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
    return out


def surrounding_class(labels: np.ndarray, mask: np.ndarray) -> int:
    """The most frequent class on a 2-pixel ring around ``mask`` (what fills a removed part)."""
    ring = dilate(mask, 2) & ~mask
    values = labels[ring] if ring.any() else labels[~mask]
    return int(np.bincount(values.astype(np.int64)).argmax()) if values.size else 0


def ranked_class(labels: np.ndarray, rank: int) -> int:
    """The non-background class of area rank ``rank`` present in ``labels`` (clamped)."""
    counts = np.bincount(labels.ravel().astype(np.int64))
    present = [k for k in np.argsort(-counts, kind="stable") if k != 0 and counts[k] > 0]
    if not present:
        raise ValueError("the mask has no non-background class to edit")
    return int(present[min(rank, len(present) - 1)])


@dataclass(frozen=True)
class PlannedEdit:
    """One edit resolved on the reference segmenter's mask of the image, so every view of the
    image (the reference's, each P's) can carry out the same edit: ``op`` on class
    ``class_index``, which grows over, moves over or is replaced by ``fill`` (the class around
    it in the reference's mask: eyes grow into skin), by ``amount`` pixels; ``centre`` (y, x)
    of the disc that ``add`` paints."""

    op: EditOp
    class_index: int
    fill: int
    amount: int
    centre: tuple[int, int] | None = None


def plan_edit(labels: np.ndarray, spec: EditSpec, rng: np.random.Generator) -> PlannedEdit:
    """``spec`` resolved on the reference's mask ``labels`` (H, W): the class of area rank
    ``spec.class_rank``, its surrounding class and, for ``add``, a disc centre drawn from
    ``rng`` on the surrounding class as far from the part as ``amount + 2`` pixels allow."""
    k = ranked_class(labels, spec.class_rank)
    part = labels == k
    fill = surrounding_class(labels, part)
    centre = None
    if spec.op == "add":
        free = (labels == fill) & ~dilate(part, spec.amount + 2)
        ys, xs = np.nonzero(free if free.any() else labels == fill)
        if ys.size == 0:
            raise ValueError(f"no room to add class {k}")
        j = int(rng.integers(len(ys)))
        centre = (int(ys[j]), int(xs[j]))
    return PlannedEdit(op=spec.op, class_index=k, fill=fill, amount=spec.amount, centre=centre)


def edit_mask(labels: np.ndarray, edit: PlannedEdit) -> tuple[np.ndarray, np.ndarray]:
    """(target, region) of ``edit`` carried out on a mask ``labels`` (H, W): the reference's
    or a predictor's own view of the image, so the target stays coherent with the mask it
    edits (a P that draws the nose a pixel wider than the reference gets its own nose
    enlarged, not the reference's pasted over its own). Parts grow and move only over the
    fill class (eyes grow into skin, not into the eyebrows); the region is exactly the pixels
    whose class changed (empty when this view has nothing to edit, e.g. no such part)."""
    k, fill = edit.class_index, edit.fill
    part = labels == k
    target = labels.copy()
    if edit.op == "enlarge":
        target[dilate(part, edit.amount) & (labels == fill)] = k
    elif edit.op == "remove":
        target[part] = fill
    elif edit.op == "move":
        shifted = np.zeros_like(part)
        shifted[edit.amount :] = part[: -edit.amount]
        target[part] = fill
        target[shifted & ((labels == fill) | part)] = k
    elif edit.op == "add":
        assert edit.centre is not None
        yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
        y, x = edit.centre
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= edit.amount**2
        target[disc & (labels == fill)] = k
    return target, target != labels


def apply_edit(
    labels: np.ndarray, spec: EditSpec, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """(target mask, edited region, edited class) of ``spec`` planned on and applied to
    ``labels`` (H, W) (:func:`plan_edit`, :func:`edit_mask`)."""
    edit = plan_edit(labels, spec, rng)  # type: ignore[arg-type]  # rng: only ``add`` draws
    target, region = edit_mask(labels, edit)
    return target, region, edit.class_index


# -- which evaluator can register which edit ----------------------------------------------------


def unregistrable(op: EditOp, class_name: str, template_parts: bool, always_drawn) -> str:
    """Why an evaluator cannot register ``op`` on ``class_name`` ("" when it can), from what it
    declares about its masks (:attr:`lineargan.models.Segmenter.template_parts` and
    ``always_drawn``). A pixel-wise model (a network, an LSE) can label any pixel any class,
    so it sees every edit. A segmenter that draws each part once from a shape template (dlib:
    68 landmarks, on every image, face or not) moves and resizes its parts with the landmarks,
    so it sees a part grow or move; it never draws a second instance of a part away from the
    template's, so it cannot see one added; and a part it draws on every image (dlib: skin,
    eyebrows, eyes, nose, lips) cannot vanish from its masks, so it cannot see one removed."""
    if op == "add" and template_parts:
        return "draws each part once, where its template puts it: an added part cannot appear"
    if op == "remove" and class_name in always_drawn:
        return f"draws {class_name} on every image: its removal cannot register"
    return ""


def color_stroke(image: np.ndarray, labels: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The colour stroke a user would paint for ``target``: each pixel of the image
    (H, W, 3 uint8) takes the mean colour its target class has in the original image (the
    image's mean colour for a class it does not show)."""
    stroke = image.astype(np.float64).copy()
    fallback = image.reshape(-1, 3).mean(0)
    for k in np.unique(target[target != labels]):
        present = labels == k
        colour = image[present].mean(0) if present.any() else fallback
        stroke[(target == k) & (target != labels)] = colour
    return np.clip(np.rint(stroke), 0, 255).astype(np.uint8)


def agreement_scores(labels: np.ndarray, target: np.ndarray, region: np.ndarray) -> dict:
    """One evaluator's view of an edit: the share of its mask ``labels`` of the edited image
    that equals the ``target`` inside the edited ``region`` (did the edit happen?) and outside
    it (was the rest kept?); NaN where that part is empty."""
    agree = labels == target
    return {
        f"agreement_{where}": float(agree[mask].mean()) if mask.any() else float("nan")
        for where, mask in (("inside", region), ("outside", ~region))
    }


def region_scores(
    edited_labels: np.ndarray,
    original_labels: np.ndarray,
    target: np.ndarray,
    region: np.ndarray,
    edited_image: np.ndarray,
    original_image: np.ndarray,
) -> dict[str, float]:
    """How an edit came out, inside the edited region and outside it: the agreement of the
    reference segmenter's mask of the edited image with the target, the fraction of pixels
    whose reference label changed from the original (the semantic change), and the mean
    absolute pixel change (0-255)."""
    relabelled = edited_labels != original_labels
    change = np.abs(edited_image.astype(np.float64) - original_image.astype(np.float64)).mean(-1)
    out: dict[str, float] = agreement_scores(edited_labels, target, region)
    for where, mask in (("inside", region), ("outside", ~region)):
        some = bool(mask.any())
        out[f"relabel_{where}"] = float(relabelled[mask].mean()) if some else float("nan")
        out[f"change_{where}"] = float(change[mask].mean()) if some else float("nan")
    return out


# the scores whose means get 95 % intervals: did the edit happen, as the reference and as P see it
INTERVAL_SCORES = ("agreement_inside", "own_agreement_inside")


def summarize_sie(
    rows: pd.DataFrame, scores: tuple[str, ...], n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Per (method, predictor, N) and edit operation (the view a reader compares: an "all"
    mean would mix operations the reference scores with ones it cannot): the number of edits,
    how many the reference scored (``scored``; ``reference_registers`` false for an edit it
    cannot see), the mean of each score over the edits that have it (NaN when none has), and
    why the rest were not scored; for :data:`INTERVAL_SCORES`, a 95 % percentile bootstrap
    interval over the operation's edits (``<score>_lo`` / ``_hi``) and the paired difference to
    the baseline P's mean (``<score>_vs_baseline`` with ``_lo`` / ``_hi``), see
    :func:`edit_intervals`."""
    keys = ["method", "predictor", "n_shot", "op"]
    rows = rows.assign(n_shot=rows["n_shot"].astype("Int64"))
    grouped = rows.groupby(keys, dropna=False, sort=False)
    out = grouped[list(scores)].mean().reset_index()
    out["edits"] = grouped.size().to_numpy()
    out["scored"] = grouped["reference_registers"].sum().to_numpy().astype(np.int64)
    out["unscored_reason"] = (
        grouped["unscored_reason"]
        .agg(lambda r: "; ".join(dict.fromkeys(x for x in r if x)))
        .to_numpy()
    )
    out = out.astype({"n_shot": "Int64"})
    intervals = edit_intervals(rows, n_boot, seed)
    return out.merge(intervals, on=keys, how="left").assign(bootstrap=n_boot)


def edit_intervals(rows: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Per (method, predictor, N, op), intervals of each of :data:`INTERVAL_SCORES`' means:
    the operation's edits (image × edit) are resampled with replacement ``n_boot`` times, the
    same draws for every method (every method edits the same images the same way), so the
    difference to the baseline P (the SIE predictor that is neither an LSE nor the colour edit;
    NaN without one) is paired. An edit without the score (an operation the evaluator cannot
    see; the colour edit has no P) counts in neither numerator nor denominator."""
    keys = ["method", "predictor", "n_shot", "op"]
    out = []
    for number, (op, of_op) in enumerate(rows.groupby("op", sort=False)):
        edit_ids = of_op[["image", "edit"]].drop_duplicates().reset_index(drop=True)
        ordinal = of_op.merge(edit_ids.reset_index(), on=["image", "edit"])["index"].to_numpy()
        weights = resample_weights(len(edit_ids), n_boot, seed + number)
        groups = {
            name: group.index.to_numpy()
            for name, group in of_op.reset_index(drop=True).groupby(
                ["method", "predictor", "n_shot"], dropna=False, sort=False
            )
        }
        baseline = next((n for n in groups if n[0] == "SIE" and is_baseline_predictor(n[1])), None)
        found: dict = {name: {} for name in groups}
        for score in INTERVAL_SCORES:
            values = of_op[score].to_numpy(dtype=np.float64)
            terms = {}
            for name, at in groups.items():
                counted = ~np.isnan(values[at])
                num, den = np.zeros((len(edit_ids), 1)), np.zeros((len(edit_ids), 1))
                np.add.at(num[:, 0], ordinal[at], np.where(counted, values[at], 0.0))
                np.add.at(den[:, 0], ordinal[at], counted.astype(np.float64))
                terms[name] = [(num, den)]
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: an unscored op
                ci = paired_intervals(terms, baseline, weights)
            for name in groups:
                found[name] |= {
                    f"{score}_lo": ci[name].lo,
                    f"{score}_hi": ci[name].hi,
                    f"{score}_vs_baseline": ci[name].diff,
                    f"{score}_vs_baseline_lo": ci[name].diff_lo,
                    f"{score}_vs_baseline_hi": ci[name].diff_hi,
                }
        out += [dict(zip(keys, (*name, op), strict=True)) | found[name] for name in groups]
    return pd.DataFrame(out).astype({"n_shot": "Int64"})

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
operations on a mask (enlarge a part, move it, remove it, add one) applied to the reference
segmenter's mask of held-out images. The edited region is where the target differs from the
original mask. The colour-edit baseline gets the same region as its mask M, painted with the
colour each target class has in the original image (the stroke a user would draw). Each edit
is scored by the reference segmenter on the edited image: agreement with the target inside the
region (did the edit happen?) and outside it (was the rest kept?), the fraction of pixels whose
label changed, and how much the pixels changed, inside and outside.

With P a predictor, SIE optimises toward P's own mask of the original image with the region
painted in (the paper's usage: the user edits the mask the LSE shows), not toward the
reference mask, whose disagreements with P elsewhere would pull the whole image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, PositiveInt

from lineargan.analyses.fewshot import FewShotParams
from lineargan.baseline import BASELINE_HELP, BaselineName, UNetParams, default_baseline
from lineargan.config import FitMethod, Frozen, ProtocolName, RunConfig
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
    fewshot: FewShotParams = FewShotParams()
    unet: UNetParams = UNetParams()
    seed: int = Field(0, ge=0)
    batch: PositiveInt = 64

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
        return cls(
            protocol=config.protocol,
            fewshot=fewshot,
            unet=unet,
            n_shot=n_shot,
            baseline=default_baseline(config),
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


def apply_edit(
    labels: np.ndarray, spec: EditSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """(target mask, edited region, edited class) of ``spec`` applied to ``labels`` (H, W).

    Parts grow and move only over their surrounding class (eyes grow into skin, not into the
    eyebrows); the region is exactly the pixels whose class changed."""
    k = ranked_class(labels, spec.class_rank)
    part = labels == k
    fill = surrounding_class(labels, part)
    target = labels.copy()
    if spec.op == "enlarge":
        target[dilate(part, spec.amount) & (labels == fill)] = k
    elif spec.op == "remove":
        target[part] = fill
    elif spec.op == "move":
        shifted = np.zeros_like(part)
        shifted[spec.amount :] = part[: -spec.amount]
        target[part] = fill
        target[shifted & ((labels == fill) | part)] = k
    elif spec.op == "add":
        # a disc of the class on its surrounding class, as far from the part as possible
        free = (labels == fill) & ~dilate(part, spec.amount + 2)
        ys, xs = np.nonzero(free if free.any() else labels == fill)
        if ys.size == 0:
            raise ValueError(f"no room to add class {k}")
        j = int(rng.integers(len(ys)))
        yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
        disc = (yy - ys[j]) ** 2 + (xx - xs[j]) ** 2 <= spec.amount**2
        target[disc & (labels == fill)] = k
    return target, target != labels, k


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
    agree = edited_labels == target
    relabelled = edited_labels != original_labels
    change = np.abs(edited_image.astype(np.float64) - original_image.astype(np.float64)).mean(-1)
    out: dict[str, float] = {}
    for where, mask in (("inside", region), ("outside", ~region)):
        some = bool(mask.any())
        out[f"agreement_{where}"] = float(agree[mask].mean()) if some else float("nan")
        out[f"relabel_{where}"] = float(relabelled[mask].mean()) if some else float("nan")
        out[f"change_{where}"] = float(change[mask].mean()) if some else float("nan")
    return out


def summarize_sie(rows: pd.DataFrame, scores: tuple[str, ...]) -> pd.DataFrame:
    """Mean of each score per (method, predictor, N) and edit operation, plus "all" edits."""
    keys = ["method", "predictor", "n_shot"]
    rows = rows.assign(n_shot=rows["n_shot"].astype("Int64"))
    per_op = rows.groupby([*keys, "op"], dropna=False, sort=False)
    overall = rows.assign(op="all").groupby([*keys, "op"], dropna=False, sort=False)
    out = []
    for grouped in (overall, per_op):
        means = grouped[list(scores)].mean().reset_index()
        means["edits"] = grouped.size().to_numpy()
        out.append(means)
    return pd.concat(out, ignore_index=True).astype({"n_shot": "Int64"})

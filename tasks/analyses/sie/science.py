"""SIE's edit set, the masks it optimises towards and which evaluator can score which edit (the
edit-independent science, shared with ``lineargan-edit``, is :mod:`lineargan.analyses.sie`)."""

from __future__ import annotations

import numpy as np
import torch

from lineargan.analyses.sie import (
    SIEParams,
    color_stroke,
    edit_mask,
    plan_edit,
    unregistrable,
)
from lineargan.models import Segmenter


def edit_set(labels: np.ndarray, images: np.ndarray, params: SIEParams) -> list[dict]:
    """Every (image, edit) of the set, planned on the reference's mask (so the class, its fill
    and an added disc's place are the same for every method, reproducible from the seed):
    the plan, the reference's target and region, and the stroke of the colour edit (painted on
    the reference's region: the colour edit has no P of its own). A class rank beyond the
    classes an image shows takes its smallest class; an edit that changes no pixel of the
    reference's mask (or an image with nothing to edit) is left out, and the tables count the
    edits that remain."""
    edits = []
    for i in range(len(labels)):
        for e, spec in enumerate(params.edits):
            rng = np.random.default_rng([params.seed, i, e])
            try:
                plan = plan_edit(labels[i], spec, rng)
            except ValueError:  # no class to edit, or no room to add one
                continue
            target, region = edit_mask(labels[i], plan)
            if not region.any():
                continue
            edits.append(
                {
                    "image": i,
                    "edit": spec.name,
                    "op": spec.op,
                    "class_index": plan.class_index,
                    "plan": plan,
                    "target": target,
                    "region": region,
                    "stroke": color_stroke(images[i], labels[i], target),
                }
            )
    return edits


def own_targets(own: np.ndarray, edits: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(targets, regions), each (E, H, W), of every edit carried out on P's own masks ``own``
    (E, H, W) of the original images: the mask SIE optimises towards with P (Appx G: the user
    edits the mask the LSE shows). The edit is the reference's plan (same class, fill and
    place) applied to P's view, so the target is coherent where P disagrees with the
    reference: outside its region it is P's own mask, where the loss starts at its minimum.
    A P that does not show the part gets an empty region (nothing of it to enlarge)."""
    pairs = [edit_mask(own[j], e["plan"]) for j, e in enumerate(edits)]
    return np.stack([t for t, _ in pairs]), np.stack([r for _, r in pairs])


@torch.no_grad()
def predicted_labels(
    generator, predictor, latents: torch.Tensor, size: int, batch: int = 64
) -> np.ndarray:
    """P's argmax masks (B, size, size) uint8 of the images of ``latents``: P's view of an
    image, before the edit (what SIE edits) and after it (whether P believes it happened)."""
    out = [
        predictor(generator(latents[s : s + batch]), size).argmax(1).to(torch.uint8).cpu()
        for s in range(0, len(latents), batch)
    ]
    return torch.cat(out).numpy()


def reference_reasons(edits: list[dict], reference: Segmenter) -> list[str]:
    """Per edit, why the reference segmenter cannot register it ("" when it can), from what
    the segmenter declares about its masks (:func:`lineargan.analyses.sie.unregistrable`)."""
    names, template, always = (
        reference.class_names,
        reference.template_parts,
        reference.always_drawn,
    )
    reasons = [unregistrable(e["op"], names[e["class_index"]], template, always) for e in edits]
    return [f"{reference.name} {r}" if r else "" for r in reasons]

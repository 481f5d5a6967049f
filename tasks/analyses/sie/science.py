"""SIE's edit set and the mask it optimises towards (the edit-independent science, shared
with ``lineargan-edit``, is :mod:`lineargan.analyses.sie`)."""

from __future__ import annotations

import numpy as np
import torch

from lineargan.analyses.sie import SIEParams, apply_edit, color_stroke


def edit_set(labels: np.ndarray, images: np.ndarray, params: SIEParams) -> list[dict]:
    """Every (image, edit) of the set: target, region, stroke. A class rank beyond the classes
    an image shows takes its smallest class; an edit that changes no pixel (or an image with
    nothing to edit) is left out, and the tables count the edits that remain."""
    edits = []
    for i in range(len(labels)):
        for e, spec in enumerate(params.edits):
            rng = np.random.default_rng([params.seed, i, e])
            try:
                target, region, k = apply_edit(labels[i], spec, rng)
            except ValueError:  # no class to edit, or no room to add one
                continue
            if not region.any():
                continue
            edits.append(
                {
                    "image": i,
                    "edit": spec.name,
                    "op": spec.op,
                    "class_index": k,
                    "target": target,
                    "region": region,
                    "stroke": color_stroke(images[i], labels[i], target),
                }
            )
    return edits


@torch.no_grad()
def fused_targets(
    generator, predictor, z0: torch.Tensor, edits: list[dict], batch: int = 64
) -> torch.Tensor:
    """The mask SIE optimises towards with predictor P: P's own mask of the original image,
    with the edited region painted with the target classes (the paper's usage, Appx G: the
    user edits the mask the LSE shows; the authors' ``fuse_stroke``). Outside the region the
    loss then starts near its minimum, so the optimisation changes what the edit asks for
    instead of pulling the whole image toward the reference segmenter's labels."""
    size = edits[0]["target"].shape[-1]
    own = torch.cat(
        [predictor(generator(z0[s : s + batch]), size).argmax(1) for s in range(0, len(z0), batch)]
    )
    region = torch.from_numpy(np.stack([e["region"] for e in edits])).to(own.device)
    target = torch.from_numpy(np.stack([e["target"] for e in edits])).long().to(own.device)
    return torch.where(region, target, own)

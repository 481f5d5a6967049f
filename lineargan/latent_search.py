"""Algorithm 2 of the paper, batched: Adam on latent codes against an edit loss + regularisers.

SIE, the colour-space edit and SCS's refinement are all "minimise L(z) + L_reg(z) with Adam
for N steps from z_0". Many latents are optimised at once by summing their losses: each
latent's gradient then depends on its own loss only, and Adam's update is per coordinate, so a
batch of B latents takes exactly the steps B separate runs would take (same result, one
generator call per step instead of B). Latents go through in sub-batches of ``batch`` to bound
memory; each sub-batch has its own optimiser, which changes nothing for the same reason.

Loss terms (Appx G), each per latent:

- L_n = ‖z − z_0‖² (neighbour regularisation), L_z = ‖z‖² (prior regularisation; the
  authors' code uses ‖z‖²/L for a latent stacking L vectors, which the callers' schedules
  fold into ``prior_weight``);
- the edit loss, given by the caller as a function of the generator output (the semantic
  cross-entropy L_s, or the colour losses L_c + L_p).

The space the latents live in is the generator's (:class:`EditSpace`): the store's by default,
or another one of the same weights, e.g. the authors' ``mixwp`` (SIE) or ``z`` (SCS) for a
store sampled in truncated w+.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import Field, model_serializer

from lineargan.config import Frozen
from lineargan.models.protocols import GeneratorAdapter, GeneratorOutput
from lineargan.models.style_latents import LatentSpace

# (generator output of a sub-batch, indices of its latents in the whole batch) -> per-latent loss
EditLoss = Callable[[GeneratorOutput, torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], None]


class EditSpace(Frozen):
    """Where SCS and SIE optimise: the latent space of the generator they run.

    ``edit_space`` None is the store's own space (its images, its latents; SCS under
    ``protocol=authors``: z, their SCS space). Another space loads the same weights taking
    latents of that space, so a store sampled in truncated w+ (``trunc-wp``, the StyleGAN
    default) can be edited in the authors' SIE space ``mixwp`` (one z per synthesis layer, each
    mapped alone, untruncated: the prior and neighbour terms then act on standard-normal
    variables) or sampled in ``z`` (one z mapped to the same untruncated w on every layer). The extractors do not care: they read the features of
    whatever latent made the image. Left out of the dump when None, so results keyed before the
    option existed keep their keys.
    """

    edit_space: LatentSpace | None = Field(
        None,
        description="latent space SCS/SIE optimise in (None: the store's, or for SCS under "
        "protocol=authors z; mixwp: the authors' SIE space for StyleGANs); needs a generator "
        "with a latent_space option",
    )

    @model_serializer(mode="wrap")
    def _omit_default_space(self, handler):  # noqa: ANN001, ANN202 - pydantic's wrap protocol
        data = handler(self)
        if isinstance(data, dict) and data.get("edit_space") is None:
            data.pop("edit_space", None)
        return data


@dataclass(frozen=True)
class LatentSchedule:
    """Adam steps, learning rate and regulariser weights of one latent optimisation."""

    steps: int = 50
    lr: float = 0.01
    neighbor_weight: float = 1e-3
    prior_weight: float = 1e-3
    batch: int = 64


@dataclass
class LatentSearch:
    """Final latents and per-latent losses (edit part only) before and after."""

    latents: torch.Tensor
    initial_loss: torch.Tensor
    final_loss: torch.Tensor


def optimize_latents(
    generator: GeneratorAdapter,
    z0: torch.Tensor,
    edit_loss: EditLoss,
    schedule: LatentSchedule,
    progress: ProgressFn | None = None,
) -> LatentSearch:
    """Algorithm 2 for every row of ``z0`` (B, latent_dim); returns the latents after
    ``schedule.steps`` Adam steps. Gradients reach only the latents (the caller freezes G/P)."""
    device = next(generator.parameters()).device
    z0 = z0.to(device=device, dtype=torch.float32)
    out = torch.empty_like(z0)
    first = torch.empty(len(z0), device=device)
    last = torch.empty(len(z0), device=device)
    done = 0
    for start in range(0, len(z0), schedule.batch):
        idx = torch.arange(start, min(start + schedule.batch, len(z0)), device=device)
        anchor = z0[idx]
        z = anchor.clone().requires_grad_(True)
        optim = torch.optim.Adam([z], lr=schedule.lr)
        for step in range(schedule.steps):
            edit = edit_loss(generator(z), idx)
            if step == 0:
                first[idx] = edit.detach()
            loss = edit.sum()
            if schedule.neighbor_weight:
                loss = loss + schedule.neighbor_weight * (z - anchor).pow(2).sum()
            if schedule.prior_weight:
                loss = loss + schedule.prior_weight * z.pow(2).sum()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            done += len(idx)
            if progress is not None:
                progress(done, len(z0) * schedule.steps)
        with torch.no_grad():  # the loss of the returned latents
            last[idx] = edit_loss(generator(z), idx)
            if schedule.steps == 0:
                first[idx] = last[idx]
        out[idx] = z.detach()
    return LatentSearch(out, first, last)


def semantic_loss(
    predictor: Callable[[GeneratorOutput, int], torch.Tensor],
    targets: torch.Tensor,
    owner: torch.Tensor | None = None,
) -> EditLoss:
    """L_s: per-latent mean pixel cross-entropy between P(G(z)) and its target mask.
    ``targets`` (T, H, W) int64; latent b's target is ``targets[owner[b]]`` (``owner`` None:
    one target per latent), so many samples of one target share its mask in memory."""
    size = targets.shape[-1]

    def loss(output: GeneratorOutput, idx: torch.Tensor) -> torch.Tensor:
        logits = predictor(output, size)
        goal = targets[idx] if owner is None else targets[owner[idx]]
        ce = torch.nn.functional.cross_entropy(logits, goal, reduction="none")
        return ce.flatten(1).mean(1)

    return loss


def color_loss(strokes: torch.Tensor, masks: torch.Tensor, originals: torch.Tensor) -> EditLoss:
    """L_c + L_p (Appx G): squared error to the colour stroke inside the mask M, and to the
    original image outside it, each normalised by its pixel count. ``strokes`` and
    ``originals`` (B, 3, H, W) in [-1, 1], ``masks`` (B, 1, H, W) in {0, 1}."""

    def loss(output: GeneratorOutput, idx: torch.Tensor) -> torch.Tensor:
        image, m = output.image, masks[idx]
        inside = (m * (image - strokes[idx]).pow(2)).flatten(1).sum(1)
        outside = ((1 - m) * (image - originals[idx]).pow(2)).flatten(1).sum(1)
        n_in = m.flatten(1).sum(1).clamp(min=1)
        n_out = (1 - m).flatten(1).sum(1).clamp(min=1)
        return inside / n_in + outside / n_out

    return loss

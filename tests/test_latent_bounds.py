"""The latent bounds lineargan-edit checks sample files against: valid tail bounds, never
refusing a draw or an SIE-edited latent of any space, always refusing absurd latents (the
z space is exercised end to end in test_edit_cli; here a random StyleGAN2 at 32 px)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lineargan.latent_bounds import chi_norm_bound, coordinate_bound, latent_bound
from lineargan.latent_search import LatentSchedule, optimize_latents
from lineargan.models.registry import get_generator
from tests.test_stylegan2_genforce import random_state


def test_the_tail_bounds_hold_and_are_not_loose():
    x = torch.randn(20000, 100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # at p = 1 %, each bound lies above the measured 99 % quantile and within 20 % of it
    norm = torch.quantile(x.norm(dim=1), 0.99).item()
    assert norm < chi_norm_bound(100, 0.01) < 1.2 * norm
    biggest = torch.quantile(x.abs().amax(dim=1), 0.99).item()
    assert biggest < coordinate_bound(100, 0.01) < 1.2 * biggest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bounds") / "g.pth"
    torch.save(random_state("genforce"), path)
    return path


@pytest.mark.parametrize("space", ["z", "w", "wp", "trunc-wp", "mixwp"])
def test_draws_and_edits_pass_absurd_latents_do_not(checkpoint, space):
    generator = get_generator("stylegan2-genforce", checkpoint=str(checkpoint), latent_space=space)
    generator.requires_grad_(False)
    bound = latent_bound(generator)
    drawn = generator.sample_latents(256, seed=7)
    assert all(bound.violation(x) is None for x in drawn)
    # SIE's 50 Adam steps at the paper's learning rate, pushing the image as far as they can
    search = optimize_latents(
        generator,
        drawn[:4],
        lambda out, _: -out.image.flatten(1).mean(1),
        LatentSchedule(steps=50, lr=0.01),
    )
    assert all(bound.violation(x) is None for x in search.latents.cpu())
    assert "not finite" in bound.violation(torch.full_like(drawn[0], float("nan")))
    assert bound.violation(drawn[0] * 1000) is not None
    assert bound.violation(torch.full_like(drawn[0], 1e30)) is not None

"""How far from its generator's latent distribution a latent read from a file may lie.

A sample's latent is a list of floats in a JSON file that a person can edit or produce
elsewhere. The generator renders anything finite: a latent of 1e30s gives a saturated image,
and SIE would then "edit" that image. So a latent is refused when the generator's own sampler
would draw it with probability below :data:`P_REFUSE` (1e-20): a genuine draw is never
refused in practice, while SIE/SCS's few Adam steps (learning rate ≤ 0.01, a prior term
pulling toward the origin) and a chain of edits stay far inside the bound.

The bound follows from the distribution of the generator's latent space:

- ``z`` (and a diffusion model's ``x_t``): z ~ N(0, I_d), so ‖z‖² ~ χ²_d, and Laurent &
  Massart (2000, Lemma 1) give P(‖z‖² ≥ d + 2√(d·u) + 2u) ≤ e^(-u); with u = ln(1/P_REFUSE),
  for the DCGAN's d = 100 draws have ‖z‖ ≈ 10 and the bound is 18.1;
- ``mixwp`` (one z per synthesis layer): every coordinate is N(0, 1) but a drawn latent
  repeats one z per layer, so the norm is not χ²-distributed; a union bound over the
  coordinates holds whatever their dependence: P(max |x_i| ≥ t) ≤ D·2e^(-t²/2), so
  t = √(2 ln(2D/P_REFUSE)) (≈ 10.5 for D = 14·512). ``z`` and ``x_t`` get this bound too;
- ``w``, ``wp``, ``trunc-wp``: a mapping network's output, with no closed form. It is a
  Lipschitz function of a standard normal z, so its distance from its mean concentrates with
  Gaussian tails; the mean and the spread of that distance are measured on
  :data:`REFERENCE_DRAWS` draws of the generator's own sampler, and a latent beyond
  mean + √(2 ln(1/P_REFUSE))·std (≈ mean + 9.6 std) is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lineargan.models.protocols import GeneratorAdapter

P_REFUSE = 1e-20
REFERENCE_DRAWS = 1024
REFERENCE_SEED = 20210602  # fixed: the bound of a generator is the same in every run
# spaces whose drawn coordinates are standard normal; True: also independent (χ² norm)
_STANDARD_NORMAL = {"z": True, "x_t": True, "mixwp": False}


@dataclass(frozen=True)
class LatentBound:
    """The region a latent of one generator's space must lie in, and why."""

    space: str
    dim: int
    max_norm: float  # of ``latent - center``
    center: torch.Tensor | None = None  # None: the origin
    max_abs: float | None = None  # per coordinate (standard-normal spaces)

    def violation(self, latent: torch.Tensor) -> str | None:
        """Why ``latent`` (dim,) is no latent of this space, or None when it is one."""
        if not bool(torch.isfinite(latent).all()):
            bad = int((~torch.isfinite(latent)).sum())
            return f"{bad} of its {self.dim} values are not finite (NaN or infinity)"
        x = latent.double()
        if self.max_abs is not None and float(x.abs().max()) > self.max_abs:
            return (
                f"a value of {float(x.abs().max()):.3g} where every coordinate of a {self.space} "
                f"latent is standard normal and stays below {self.max_abs:.1f} in magnitude "
                f"(except with probability {P_REFUSE:g})"
            )
        norm = float((x if self.center is None else x - self.center.double()).norm())
        if norm > self.max_norm:
            where = "norm" if self.center is None else "distance from the mean latent"
            return (
                f"a {where} of {norm:.3g}; the generator's {self.space} latents ({self.dim} "
                f"values) stay below {self.max_norm:.3g} (except with probability {P_REFUSE:g})"
            )
        return None


def chi_norm_bound(dim: int, p: float = P_REFUSE) -> float:
    """‖z‖ that z ~ N(0, I_dim) exceeds with probability ≤ ``p`` (Laurent & Massart 2000)."""
    u = math.log(1 / p)
    return math.sqrt(dim + 2 * math.sqrt(dim * u) + 2 * u)


def coordinate_bound(dim: int, p: float = P_REFUSE) -> float:
    """|x_i| that any of ``dim`` standard-normal coordinates exceeds with probability ≤ ``p``,
    whatever their dependence (union bound with the Chernoff tail 2e^(-t²/2))."""
    return math.sqrt(2 * math.log(2 * dim / p))


@torch.no_grad()
def latent_bound(generator: GeneratorAdapter, p: float = P_REFUSE) -> LatentBound:
    """The bound of ``generator``'s latent space (see the module docstring for each space)."""
    space, dim = generator.latent_space, generator.latent_dim
    if space in _STANDARD_NORMAL:
        independent = _STANDARD_NORMAL[space]
        # dependent coordinates: the norm is at most √D times the coordinate bound
        max_norm = chi_norm_bound(dim, p) if independent else math.inf
        return LatentBound(space, dim, max_norm, max_abs=coordinate_bound(dim, p))
    draws = generator.sample_latents(REFERENCE_DRAWS, REFERENCE_SEED).double().cpu()
    center = draws.mean(0)
    dist = (draws - center).norm(dim=1)
    spread = math.sqrt(2 * math.log(1 / p))
    return LatentBound(space, dim, float(dist.mean() + spread * dist.std()), center.float())

"""SeFa's directions measured by linear semantics: the parameters (the science, shared with
``lineargan-edit sefa``, is :mod:`lineargan.analyses.sefa`)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt, field_validator

from lineargan.analyses.sefa import Naming
from lineargan.config import FitConfig, Frozen, RunConfig

# SeFa's code: distances −3…3 in 11 steps, its top 5 semantics; the small profiles fewer.
_PROFILE = {
    "paper": {
        "n_directions": 10,
        "alphas": tuple(np.linspace(-3, 3, 11).round(6)),
        "n_samples": 64,
    },
    "quick": {"n_directions": 5, "alphas": (-3.0, -1.5, 0.0, 1.5, 3.0), "n_samples": 16},
    "smoke": {"n_directions": 2, "alphas": (-3.0, 0.0, 3.0), "n_samples": 2},
}


class SefaParams(Frozen):
    """The top ``n_directions`` SeFa directions of ``layers`` (style-based generators: all,
    coarse, middle, fine or indices; ``module``: the torch-hooks module reading the latent),
    each applied at every α of ``alphas`` to ``n_samples`` seeded latents, labelled by ``lse``
    (Table 1's fit, reused) and, with ``reference``, by the run's segmenter."""

    n_directions: PositiveInt = 10
    alphas: tuple[float, ...] = tuple(np.linspace(-3, 3, 11).round(6))
    n_samples: PositiveInt = 64
    layers: str | tuple[int, ...] = "all"
    module: str | None = None
    normalize: bool = True  # genforce/sefa's unit rows (docs/protocol.md)
    order: Literal["eigenvalue", "solver"] = "eigenvalue"
    reference: bool = True
    dominance: float = Field(0.5, gt=0, le=1)
    enrichment: float = Field(2.0, ge=1)
    seed: int = Field(0, ge=0)
    batch: PositiveInt = 32
    lse: FitConfig = FitConfig(extractor="LSE")

    @field_validator("alphas")
    @classmethod
    def _check_alphas(cls, alphas: tuple[float, ...]) -> tuple[float, ...]:
        if not alphas or max(abs(a) for a in alphas) == 0:
            raise ValueError("alphas need at least one non-zero distance")
        return tuple(sorted(set(float(a) for a in alphas)))

    @classmethod
    def for_run(cls, config: RunConfig) -> SefaParams:
        """The profile's sizes, labelled by the run's own LSE (so Table 1's fit is reused)."""
        sizes = _PROFILE.get(config.profile, _PROFILE["paper"])
        return cls(**sizes, lse=config.fit("LSE"))

    @property
    def naming(self) -> Naming:
        return Naming(self.alphas, self.dominance, self.enrichment)

"""SeFa's directions measured by linear semantics: the parameters (the science, shared with
``lineargan-edit sefa``, is :mod:`lineargan.analyses.sefa`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import Field, PositiveInt

from lineargan.analyses.sefa import SefaOptions
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


class SefaParams(SefaOptions):
    """The top ``n_directions`` SeFa directions, each applied at every α of ``alphas`` to
    ``n_samples`` seeded latents, labelled by ``lse`` (Table 1's fit, reused) and, with
    ``reference``, by the run's segmenter (the other fields: :class:`SefaOptions`)."""

    n_directions: PositiveInt = 10
    alphas: tuple[float, ...] = tuple(np.linspace(-3, 3, 11).round(6))
    n_samples: PositiveInt = 64
    reference: bool = True
    seed: int = Field(0, ge=0)
    lse: FitConfig = FitConfig(extractor="LSE")

    @classmethod
    def for_run(cls, config: RunConfig, after: Mapping[str, Frozen] | None = None) -> SefaParams:
        """The profile's sizes, labelled by the run's own LSE (so Table 1's fit is reused)."""
        sizes = _PROFILE.get(config.profile, _PROFILE["paper"])
        return cls(**sizes, lse=config.fit("LSE"))

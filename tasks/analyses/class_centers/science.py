"""Class centers (Sec 3.3, Fig 4): the parameters; the math lives in :mod:`.geometry`."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import PositiveInt

from lineargan.config import Frozen, RunConfig

_PROFILE_IMAGES = {"paper": 3000, "quick": 1024, "smoke": 64}


class ClassCentersParams(Frozen):
    """Sec 3.3: centers from ``n_images`` training images (paper: 3000)."""

    n_images: PositiveInt = 3000
    resolution: PositiveInt | None = None  # None: the largest feature-map resolution
    figure_samples: PositiveInt = 6

    @classmethod
    def for_run(
        cls, config: RunConfig, after: Mapping[str, Frozen] | None = None
    ) -> ClassCentersParams:
        p = config.resolved_profile
        return cls(
            n_images=_PROFILE_IMAGES.get(config.profile, min(3000, p.n_train)),
            figure_samples=p.figure_samples,
        )

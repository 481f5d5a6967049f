"""Class centers (Sec 3.3, Fig 4): the parameters; the math lives in :mod:`.geometry`."""

from __future__ import annotations

from pydantic import PositiveInt

from lineargan.config import Frozen, get_profile

_PROFILE_IMAGES = {"paper": 3000, "quick": 1024, "smoke": 64}


class ClassCentersParams(Frozen):
    """Sec 3.3: centers from ``n_images`` training images (paper: 3000)."""

    n_images: PositiveInt = 3000
    resolution: PositiveInt | None = None  # None: the largest feature-map resolution
    figure_samples: PositiveInt = 6

    @classmethod
    def for_profile(cls, profile: str) -> ClassCentersParams:
        p = get_profile(profile)
        return cls(
            n_images=_PROFILE_IMAGES.get(profile, min(3000, p.n_train)),
            figure_samples=p.figure_samples,
        )

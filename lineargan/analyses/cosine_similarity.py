"""Cosine similarity of categories (Appx F, Fig 9): the parameters of Algorithm 1.

The paper uses T1 = 200, T2 = 4000 on 1024² images; at the embedded DCGAN's 32² feature maps
only background and skin ever reach T1 = 200, so the small profiles use T1 = 5 (see
``tasks/analyses/cosine_similarity.py`` for the measured class sizes).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from lineargan.config import Frozen, get_profile

_PROFILE_T = {"paper": (200, 4000), "quick": (5, 400), "smoke": (5, 100)}


class CosineSimilarityParams(Frozen):
    """Algorithm 1's thresholds (paper: T1 = 200, T2 = 4000) and where to sample."""

    t1: PositiveInt = 200
    t2: PositiveInt = 4000
    resolution: PositiveInt | None = None  # None: the largest feature-map resolution
    split: Literal["train", "eval"] = "train"
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> CosineSimilarityParams:
        if self.t2 < self.t1 or self.t2 % self.t1:
            raise ValueError(f"t2 ({self.t2}) must be a multiple of t1 ({self.t1})")
        return self

    @classmethod
    def for_profile(cls, profile: str) -> CosineSimilarityParams:
        get_profile(profile)
        t1, t2 = _PROFILE_T.get(profile, (200, 4000))
        return cls(t1=t1, t2=t2)

"""Cosine similarity of categories (Appx F, Fig 9): the parameters of Algorithm 1.

The paper uses T1 = 200, T2 = 4000 on 1024² images; at the embedded DCGAN's 32² feature maps
only background and skin ever reach T1 = 200, so the small profiles use T1 = 5 (see
``step.py`` for the measured class sizes). T2 follows T1 at the
paper's ratio, T2 = 20·T1 (each pool = T1 vectors from 20 images), unless it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from lineargan.config import Frozen, RunConfig

_PROFILE_T1 = {"paper": 200, "quick": 5, "smoke": 5}
PAPER_T2_PER_T1 = 20  # 4000 / 200


class CosineSimilarityParams(Frozen):
    """Algorithm 1's thresholds (paper: T1 = 200, T2 = 4000) and where to sample.

    ``t2`` None keeps the paper's ratio, T2 = 20·T1, so lowering T1 alone (a profile, or
    ``--set cosine_similarity.t1=10``) lowers T2 with it; read the value from :attr:`pool_size`.
    """

    t1: PositiveInt = 200
    t2: PositiveInt | None = None
    resolution: PositiveInt | None = None  # None: the largest feature-map resolution
    split: Literal["train", "eval"] = "train"
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> CosineSimilarityParams:
        if self.pool_size < self.t1 or self.pool_size % self.t1:
            raise ValueError(f"t2 ({self.t2}) must be a multiple of t1 ({self.t1})")
        return self

    @property
    def pool_size(self) -> int:
        """T2: the given value, or 20·T1."""
        return self.t2 if self.t2 is not None else PAPER_T2_PER_T1 * self.t1

    @classmethod
    def for_run(
        cls, config: RunConfig, after: Mapping[str, Frozen] | None = None
    ) -> CosineSimilarityParams:
        return cls(t1=_PROFILE_T1.get(config.profile, 200))

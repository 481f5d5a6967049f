"""Layer-wise semantics (Appx I, Eq. 8): the parameters of the per-layer-loss LSE."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, PositiveInt

from lineargan.config import Frozen, RunConfig, Schedule


class LayerwiseParams(Frozen):
    """α of Eq. 8, the training schedule, the fit seed and how many images Fig 10 shows."""

    alpha: float = Field(0.1, gt=0)
    schedule: Schedule = Schedule()
    seed: int = Field(0, ge=0)
    figure_samples: PositiveInt = 3

    @classmethod
    def for_run(
        cls, config: RunConfig, after: Mapping[str, Frozen] | None = None
    ) -> LayerwiseParams:
        """The run's full LSE schedule and fit seed (the ones Table 1's LSE uses)."""
        return cls(schedule=config.fit("LSE").schedule, seed=config.fit_seed)

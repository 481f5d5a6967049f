"""Table 1's science: which fits it compares (the run's extractors under each fit method) and
how their per-class IoU rows become its summary. No I/O."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from pydantic import PositiveInt

from lineargan.config import FitConfig, Frozen, RunConfig
from lineargan.render import sort_fits, with_method


class Table1Params(Frozen):
    """``fits``: every fit of Table 1 by label ("LSE", "LSE:converged", ...); the flow trains
    exactly these, and every analysis that declares ``Needs.fits`` reuses them.
    ``figure_samples``: evaluation images in the Fig 3 comparison."""

    fits: dict[str, FitConfig]
    figure_samples: PositiveInt = 6

    @classmethod
    def for_run(cls, config: RunConfig, after: Mapping[str, Frozen] | None = None) -> Table1Params:
        return cls(fits=config.table1_fits(), figure_samples=config.resolved_profile.figure_samples)


def table1_summary(iou: pd.DataFrame) -> pd.DataFrame:
    """mIoU per (generator, segmenter, method, extractor) and the difference to the best.

    ``rel_diff`` is Appx D's (y_i − y*) / y* with y* the best mIoU of the same model pair
    under the same fit method (the paper's schedule and converged fits are separate rows).
    """
    counted = with_method(iou[iou["images"] > 0])
    group = ["generator", "segmenter", "method", "extractor", "fit_key"]
    summary = counted.groupby(group, as_index=False)["iou"].mean().rename(columns={"iou": "miou"})
    best = summary.groupby(["generator", "segmenter", "method"])["miou"].transform("max")
    summary["rel_diff"] = (summary["miou"] - best) / best
    return sort_fits(summary, ["generator", "segmenter", "method", "extractor"])

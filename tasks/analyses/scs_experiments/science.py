"""The experiments that explain the default's Table 3 (issue #26): parameters and the math.

Table 3 on the embedded default has the baseline UNet above every few-shot LSE, the paper
the reverse. Three arms, each under both protocols, separate the candidate explanations:

- **matched baselines**: UNets trained for fewer steps, the step count chosen per N so that
  the UNet's mIoU against the reference equals the N-shot LSE's (both measured on training
  images no predictor trained on, :func:`matching_images`, never on the evaluation split).
  If a matched UNet still beats the LSE it matches, the UNet is an easier P to optimise
  through; if it falls to the LSE's level, the full UNet wins because it is the better P.
- **no optimisation**: the candidate each P chooses, scored before any Adam step (the SCS
  rows' ``agreement_initial``): how much of a P's agreement is candidate choice alone.
- **oracle / first candidate**: the candidate the reference itself would choose among the
  same seeded pool, and the first candidate (a choice that ignores the target): the ceiling
  and the floor of choosing without optimising.

Every number carries a 95 % paired bootstrap interval over the targets
(:func:`lineargan.analyses.scs.paired_intervals`); repeats and UNet seeds are averaged
inside each resample.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from pydantic import Field, NonNegativeInt, PositiveInt

from lineargan.analyses.fewshot import FewShotParams, choose_train_indices
from lineargan.analyses.scs import (
    HEADLINE_AGGREGATIONS,
    SCSParams,
    percentile_interval,
    repeat_agreement,
    resample_weights,
    target_terms,
)
from lineargan.baseline import UNetParams
from lineargan.config import Frozen, ProtocolName, RunConfig
from lineargan.errors import LinearGanError
from lineargan.metrics import IoUAccumulator
from lineargan.models.protocols import GeneratorAdapter
from lineargan.predictors import SemanticPredictor


class SCSExperimentParams(Frozen):
    """The SCS settings shared by every arm (``scs``: targets, samples, steps, the few-shot
    LSEs, the UNet's training), the protocols to run, the UNet seeds, and the step counts
    among which each few-shot LSE's matched UNet is chosen."""

    scs: SCSParams
    protocols: tuple[ProtocolName, ...] = ("paper", "authors")
    unet_seeds: tuple[NonNegativeInt, ...] = Field(
        (0, 1), description="seeds of the full baseline UNet (its training steps: scs.unet)"
    )
    matched_steps: tuple[PositiveInt, ...] = Field(
        (64, 96, 128, 160, 192, 256, 320, 400),
        description="training steps of the weakened UNets; per N the one whose mIoU against "
        "the reference (on held-out training images) is closest to the N-shot LSE's (quick "
        "profile, seed 0: 64 steps 3.6 %, 128 steps 19.3 %, 1600 steps 59.4 %; the 1- to "
        "16-shot LSEs: 10 to 33 %)",
    )
    matched_seeds: tuple[NonNegativeInt, ...] = (0, 1)

    @classmethod
    def for_run(
        cls, config: RunConfig, after: Mapping[str, Frozen] | None = None
    ) -> SCSExperimentParams:
        """Off unless named (``--analyses '["scs_experiments"]'``): at the quick profile the
        arms took 29 min on 2 cores beside one other job (the weakened UNets' training 7,
        the paper protocol's 15 SCS runs 8, the authors' 14), 80 min beside several.
        ``quick``: 60 targets × 1 sample, the first repeat of each N (95 % intervals about
        ±2.5 points, differences ±1.5-3);
        ``smoke``: 3 targets, 3 steps, one seed; ``paper``: 100 targets × 1 sample, 5
        repeats, 3 seeds."""
        base = SCSParams.for_run(config, after)
        update: dict = {
            "smoke": dict(targets=3, samples=1, steps=3, repeats=1),
            "quick": dict(targets=60, samples=1, repeats=1),
            "paper": dict(targets=100, samples=1),
        }[config.profile]
        extra: dict = {
            "smoke": dict(unet_seeds=(0,), matched_steps=(2, 4), matched_seeds=(0,)),
            "quick": {},
            "paper": dict(unet_seeds=(0, 1, 2), matched_seeds=(0, 1, 2)),
        }[config.profile]
        return cls(scs=base.model_copy(update=update), **extra)


def matching_images(n_train: int, unet: UNetParams, fewshot: FewShotParams) -> np.ndarray:
    """The training-store images every predictor's accuracy is measured (and matched) on: the
    UNet's held-out part (``unet.holdout``) less every few-shot LSE's training images. No
    predictor compared trained on them, and none is in the evaluation split SCS targets come
    from, so matching accuracies there chooses nothing on the targets."""
    held_out = np.arange(unet.split(n_train), n_train)
    used = [
        row for n in fewshot.shots
        for row in choose_train_indices(n_train, n, fewshot.repeats, fewshot.seed)
    ]  # fmt: skip
    free = np.setdiff1d(held_out, np.concatenate(used)) if used else held_out
    if not len(free):
        raise LinearGanError(
            f"the baseline UNet holds out no training image that no few-shot LSE trained on "
            f"({len(held_out)} held out of {n_train}), so there is nothing to match "
            "accuracies on",
            "set unet.holdout above 0 or use a larger training store",
        )
    return free


@torch.no_grad()
def predictor_miou(
    generator: GeneratorAdapter,
    predictor: SemanticPredictor,
    latents: torch.Tensor,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    batch: int,
) -> float:
    """mIoU (Appx A) of P's masks of G(latents) against the reference's ``labels``: the one
    accuracy measure for LSEs (which read G's features) and UNets (which read G's image)."""
    device = next(generator.parameters()).device
    acc = IoUAccumulator(class_names)
    size = labels.shape[-1]
    for s in range(0, len(latents), batch):
        pred = predictor(generator(latents[s : s + batch].to(device)), size).argmax(1)
        acc.update(pred.cpu(), labels[s : s + batch])
    return acc.result().miou


def match_steps(target: Mapping[int, float], candidates: Mapping[int, float]) -> dict[int, int]:
    """For each N (``target``: N -> the N-shot LSEs' mean mIoU) the step count among
    ``candidates`` (steps -> the weakened UNets' mean mIoU) whose mIoU is closest."""
    steps = sorted(candidates)
    return {
        n: min(steps, key=lambda k, m=miou: (abs(candidates[k] - m), k))
        for n, miou in target.items()
    }


def summarize_experiments(
    samples: pd.DataFrame,
    predictors: pd.DataFrame,
    n_targets: int,
    n_boot: int,
    seed: int,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per (protocol, family, N, arm): Eq. 7 and ``aggregate_iou`` averaged over the family's
    members (repeats / seeds), each with a percentile interval over ``n_boot`` resamples of the
    targets, and the paired Eq. 7 difference to the full UNet (its same arm; its optimised
    arm for the oracle and first-candidate arms) and, for an LSE, to the UNet weakened to its
    mIoU (same arm). "gain" rows: optimised − chosen, the gain
    of the latent optimisation over the chosen candidate. Every key is resampled with the
    same target weights, so every difference is paired (across protocols too)."""
    weights = resample_weights(n_targets, n_boot, seed)
    ones = np.ones((1, n_targets))
    point: dict[tuple, dict[str, float]] = {}
    boot: dict[tuple, dict[str, np.ndarray]] = {}
    meta: dict[tuple, dict] = {}
    keys = samples.assign(n_shot=samples["n_shot"].astype("Int64"))
    for key, group in keys.groupby(["protocol", "family", "n_shot", "arm"], dropna=False):
        key = (*key[:2], None if pd.isna(key[2]) else int(key[2]), key[3])
        members = [m for _, m in group.groupby(group["member"].fillna(-1))]
        point[key], boot[key] = {}, {}
        for agg in HEADLINE_AGGREGATIONS:
            terms = [
                target_terms(
                    *(np.stack(m[c].to_numpy()) for c in ("inter", "union", "predicted")),
                    m["target"].to_numpy(),
                    n_targets,
                    agg,
                )
                for m in members
            ]
            point[key][agg] = float(repeat_agreement(terms, ones)[0])
            boot[key][agg] = repeat_agreement(terms, weights)
        mine = predictors[
            (predictors["family"] == key[1])
            & (predictors["n_shot"].fillna(-1) == (-1 if key[2] is None else key[2]))
        ]
        meta[key] = {
            "members": len(members),
            "pairs": len(group) // len(members),
            "p_miou": float(mine["miou"].mean()) if len(mine) else float("nan"),
        }

    def unet(key: tuple) -> tuple:
        arm = key[3] if key[3] in ("chosen", "optimised", "gain") else "optimised"
        return (key[0], "UNet", None, arm)

    for key in [k for k in point if k[3] == "optimised" and (*k[:3], "chosen") in point]:
        gain = (*key[:3], "gain")
        chosen = (*key[:3], "chosen")
        point[gain] = {a: point[key][a] - point[chosen][a] for a in HEADLINE_AGGREGATIONS}
        boot[gain] = {a: boot[key][a] - boot[chosen][a] for a in HEADLINE_AGGREGATIONS}
        meta[gain] = meta[key]
    rows = []
    for key in point:
        lo, hi = percentile_interval(boot[key]["paper"], level)
        a_lo, a_hi = percentile_interval(boot[key]["authors"], level)

        def versus(base: tuple, key: tuple = key) -> tuple[float, float, float]:
            """Eq. 7 difference to ``base`` with its paired interval (NaN where absent)."""
            if base not in point or base == key:
                return float("nan"), float("nan"), float("nan")
            diff = point[key]["paper"] - point[base]["paper"]
            lo, hi = percentile_interval(boot[key]["paper"] - boot[base]["paper"], level)
            return diff, lo, hi

        diff, d_lo, d_hi = versus(unet(key))
        matched = versus((key[0], "UNet-weakened", key[2], key[3]) if key[1] == "LSE" else key)
        rows.append(
            {
                "protocol": key[0],
                "family": key[1],
                "n_shot": key[2],
                "arm": key[3],
                **meta[key],
                "agreement": point[key]["paper"],
                "lo": lo,
                "hi": hi,
                "authors": point[key]["authors"],
                "authors_lo": a_lo,
                "authors_hi": a_hi,
                "vs_unet": diff,
                "vs_unet_lo": d_lo,
                "vs_unet_hi": d_hi,
                "vs_matched": matched[0],
                "vs_matched_lo": matched[1],
                "vs_matched_hi": matched[2],
                "bootstrap": n_boot,
            }
        )
    return pd.DataFrame(rows).astype({"n_shot": "Int64"})

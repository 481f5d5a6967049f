"""Semantic-Conditional Sampling (Sec 4.2, Appx H, Algorithm 3, Table 3): the science, no I/O.

For a target mask Y: draw n_init latents, keep the one whose predicted mask P(G(z̄)) agrees
with Y on the most pixels (the paper's "argmin" is a typo: the authors' code takes the
highest score), then run Adam on the cross-entropy between P(G(z)) and Y. Every (target,
sample) pair draws its candidates from its own seed, so all predictors P start from the same
candidate pool and a pair's result never depends on how pairs are batched.

Agreement with the target, evaluated by the reference segmenter P* from the same per-pair,
per-class counts (background ignored, Appx A):

- ``paper``, Eq. 7: the mean over pairs of each pair's mIoU (the classes in either mask);
- ``authors``: what ``figure/fewshot_scs.py`` computes with ``evaluate.py::aggregate_iou``
  over ``evaluate_predictions``: each class's IoU averaged over the pairs where the class is
  in the target or the sample's mask, then the mean over classes;
- ``pooled``: Σ∩ / Σ∪ per class over all pairs, then the class mean. Neither the paper's nor
  the authors' aggregation; kept as a third view of the same counts.

Where the paper and the authors' code (AtlantixJJ/LinearGAN at a5767a7, ``manipulation/scs.py``,
``manipulation/strategy.py``, ``submit.py::scs``) differ (``protocol``):

| setting | paper (default) | authors |
|---|---|---|
| Adam learning rate | 1e-3 (Appx H) | 0.01 (``sseg_se``'s default: ``--base-lr`` is never passed on) |
| candidates n_init | 10 for faces, 100 for scenes | 10 bedroom, 100 church, 100 FFHQ |
| loss | cross-entropy | + 1e-3·‖z − z₀‖² + 1e-3·‖z‖²/L (L latent vectors) |
| latent space | the store's | z: one z, mapped untruncated to every layer's w |
| headline agreement | Eq. 7 | ``aggregate_iou`` |

All three agreements are always stored; ``protocol`` picks the rest. n_init comes from
``n_init_per_protocol`` (faces by default; a scene recipe sets its own, ``lineargan.recipes``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
from pydantic import Field, PositiveInt, field_validator, model_serializer

from lineargan.analyses.fewshot import FewShotParams, max_deviation
from lineargan.baseline import (
    BASELINE_HELP,
    BaselineName,
    UNetParams,
    default_baseline,
    is_baseline_predictor,
)
from lineargan.config import FitMethod, Frozen, ProtocolName, RunConfig
from lineargan.errors import LinearGanError
from lineargan.latent_search import EditSpace, LatentSchedule, optimize_latents, semantic_loss
from lineargan.masks import TargetMasks
from lineargan.models.protocols import GeneratorAdapter
from lineargan.models.style_latents import LatentSpace
from lineargan.predictors import SemanticPredictor


@dataclass(frozen=True)
class SCSProtocol:
    """The optimisation one protocol prescribes (n_init is per dataset: ``n_init_per_protocol``)."""

    lr: float
    neighbor_weight: float
    prior_weight: float  # of ‖z‖²/L, L = the latent vectors of a sample (1 in z)
    space: LatentSpace | None  # None: the store's own latent space
    headline: str  # which agreement Table 3 leads with


PROTOCOL_SCS = {
    "paper": SCSProtocol(
        lr=1e-3, neighbor_weight=0.0, prior_weight=0.0, space=None, headline="paper"
    ),
    "authors": SCSProtocol(
        lr=1e-2, neighbor_weight=1e-3, prior_weight=1e-3, space="z", headline="authors"
    ),
}
# Candidates for a face generator (Appx H: 10; the authors' FFHQ launcher: 100). Scene recipes
# set their own (lineargan.recipes).
FACE_N_INIT: dict[ProtocolName, int] = {"paper": 10, "authors": 100}


class SCSParams(EditSpace):
    """Table 3's settings. ``lr``/``n_init``/``neighbor_weight``/``prior_weight`` None: the
    protocol's value; ``edit_space`` None: the protocol's space (authors: z where the generator
    has one besides its own, else its own)."""

    protocol: ProtocolName = "paper"
    targets: PositiveInt = Field(100, description="target masks, drawn from the eval store")
    samples: PositiveInt = Field(10, description="conditional samples per target")
    steps: int = Field(50, ge=0)
    lr: float | None = Field(None, gt=0)
    n_init: PositiveInt | None = None
    n_init_per_protocol: dict[ProtocolName, PositiveInt] = Field(
        default_factory=lambda: dict(FACE_N_INIT),
        description="candidates per protocol when n_init is None: the dataset's (faces by "
        "default; a scene recipe sets paper 100, authors 10 for bedroom / 100 for church)",
    )
    neighbor_weight: float | None = Field(None, ge=0)
    prior_weight: float | None = Field(
        None, ge=0, description="weight of ‖z‖²/L (L: latent vectors per sample)"
    )
    target_source: Literal["detected", "all"] = Field(
        "detected",
        description="draw targets among the eval images whose labels came from the reference "
        "segmenter's own detection (detected) or among all of them",
    )
    target_masks: TargetMasks | None = Field(
        None,
        description="a folder of target masks instead (the paper's faces: human-annotated "
        "CelebAMask-HQ masks): single-channel PNGs, the first `targets` in file-name order, "
        "with an optional class map; a path alone is the folder",
    )
    shots: tuple[PositiveInt, ...] = (1, 4, 8, 16)
    repeats: PositiveInt = Field(5, description="few-shot repeats used (the first ones of Table 2)")
    fit_method: FitMethod = Field(
        "converged",
        description="which few-shot LSEs of Table 2: converged (default) or the paper's "
        "schedule, whose quick-profile fits predict little but skin (docs/results.md, Table 2)",
    )
    baseline: BaselineName = Field("unet", description=BASELINE_HELP)
    fewshot: FewShotParams = FewShotParams()
    unet: UNetParams = UNetParams()
    seed: int = Field(0, ge=0)
    batch: PositiveInt = Field(64, description="latents per generator call")
    figure_targets: PositiveInt = 4
    bootstrap: PositiveInt = Field(
        1000, description="resamples of the targets for Table 3's 95 % intervals (paired)"
    )

    @property
    def settings(self) -> SCSProtocol:
        return PROTOCOL_SCS[self.protocol]

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler):  # noqa: ANN001, ANN202 - pydantic's wrap protocol
        """``edit_space`` and ``target_masks`` are left out of the dump when None, so results
        keyed before the options existed keep their keys (:class:`EditSpace`)."""
        data = handler(self)
        if isinstance(data, dict):
            for name in ("edit_space", "target_masks"):
                if data.get(name) is None:
                    data.pop(name, None)
        return data

    def schedule(self, latent_vectors: int = 1) -> LatentSchedule:
        """The Adam run for latents that stack ``latent_vectors`` vectors each (the
        generator's ``latent_vectors``): the prior term is ‖z‖²/L as in the authors' code."""
        prior = self.prior_weight if self.prior_weight is not None else self.settings.prior_weight
        neighbor = self.neighbor_weight
        return LatentSchedule(
            steps=self.steps,
            lr=self.lr if self.lr is not None else self.settings.lr,
            neighbor_weight=neighbor if neighbor is not None else self.settings.neighbor_weight,
            prior_weight=prior / latent_vectors,
            batch=self.batch,
        )

    @field_validator("n_init_per_protocol")
    @classmethod
    def _every_protocol(cls, value: dict[ProtocolName, int]) -> dict[ProtocolName, int]:
        missing = [p for p in get_args(ProtocolName) if p not in value]
        if missing:
            raise ValueError(f"no candidate count for protocol(s) {missing}")
        return value

    def candidates(self) -> int:
        """n_init: the explicit one, else the protocol's for this dataset."""
        return self.n_init if self.n_init is not None else self.n_init_per_protocol[self.protocol]

    def space(self) -> LatentSpace | None:
        """The latent space SCS samples in: ``edit_space`` when given, else the protocol's
        (None: the store's)."""
        return self.edit_space if self.edit_space is not None else self.settings.space

    @classmethod
    def for_run(cls, config: RunConfig, after: Mapping[str, Frozen] | None = None) -> SCSParams:
        """``paper``: 100 targets × 10 samples, N ∈ {1, 4, 8, 16} × 5 repeats (Table 3);
        ``quick``: 12 targets × 2 samples, 2 repeats; ``smoke``: 2 targets × 2 samples, 5
        steps, the smoke few-shot N. ``after``: the run's few-shot (Table 2) and baseline UNet
        parameters, so SCS reads their checkpoints instead of training its own; without them,
        the profile's. The baseline P is the run's segmenter when it is differentiable, else
        the surrogate UNet (:func:`~lineargan.baseline.default_baseline`)."""
        profile, after = config.profile, after or {}
        fewshot = after.get("fewshot") or FewShotParams.for_run(config)
        unet = after.get("baseline_segmenter") or UNetParams.for_run(config)
        shots = tuple(n for n in (1, 4, 8, 16) if n in fewshot.shots)
        sizes = {
            "smoke": dict(targets=2, samples=2, steps=5, repeats=1),
            "quick": dict(targets=12, samples=2, repeats=2),
            "paper": {},
        }[profile]
        repeats = min(sizes.pop("repeats", 5), fewshot.repeats)
        return cls(
            protocol=config.protocol,
            shots=shots,
            repeats=repeats,
            fewshot=fewshot,
            unet=unet,
            baseline=default_baseline(config),
            **sizes,
        )


def pair_seed(seed: int, target: int, sample: int) -> int:
    """The seed of one (target, sample) pair's candidate latents."""
    return int(np.random.SeedSequence([seed, target, sample]).generate_state(1)[0])


def candidate_latents(
    generator: GeneratorAdapter, pairs: list[tuple[int, int]], n_init: int, seed: int
) -> torch.Tensor:
    """(len(pairs), n_init, latent_dim) candidates, each pair from its own seed."""
    return torch.stack([generator.sample_latents(n_init, pair_seed(seed, t, s)) for t, s in pairs])


def best_candidates(agreeing_pixels: torch.Tensor) -> torch.Tensor:
    """Index of the candidate that agrees with the target on the most pixels, per pair
    (``agreeing_pixels`` (pairs, n_init); ties: the first)."""
    return agreeing_pixels.argmax(dim=1)


@dataclass
class SCSRun:
    """One predictor's conditional samples for a list of (target, sample) pairs."""

    initial: torch.Tensor  # (pairs, latent_dim): the chosen candidates z_0
    final: torch.Tensor  # (pairs, latent_dim): after the Adam steps
    chosen: torch.Tensor  # (pairs,): index of z_0 among the pair's candidates
    initial_pixels: torch.Tensor  # (pairs,): fraction of pixels where P(G(z_0)) equals Y
    loss_initial: torch.Tensor  # (pairs,): cross-entropy under P at z_0
    loss_final: torch.Tensor


@torch.no_grad()
def _agreeing_pixels(
    generator: GeneratorAdapter,
    predictor: SemanticPredictor,
    candidates: torch.Tensor,
    targets: torch.Tensor,
    owner: torch.Tensor,
    batch: int,
) -> torch.Tensor:
    """(pairs, n_init) pixel counts where P(G(candidate)) equals the pair's target
    (``targets[owner[pair]]``), ``batch`` candidates per generator call."""
    n_pairs, n_init, dim = candidates.shape
    flat = candidates.reshape(-1, dim)
    flat_owner = owner.repeat_interleave(n_init)
    counts = torch.empty(len(flat), dtype=torch.int64, device=targets.device)
    size = targets.shape[-1]
    for s in range(0, len(flat), batch):
        z = flat[s : s + batch].to(targets.device)
        pred = predictor(generator(z), size).argmax(1)
        counts[s : s + batch] = (pred == targets[flat_owner[s : s + batch]]).flatten(1).sum(1)
    return counts.view(n_pairs, n_init)


def conditional_sample(
    generator: GeneratorAdapter,
    predictor: SemanticPredictor,
    targets: torch.Tensor,
    pairs: list[tuple[int, int]],
    params: SCSParams,
    progress=None,
) -> SCSRun:
    """Algorithm 3 for every pair (target index into ``targets``, sample index), batched.

    ``targets`` (T, H, W) int64 on the generator's device (each target's mask is held once,
    however many samples it has); returns the latents before and after optimisation. The
    caller freezes G and P (only the latents need gradients)."""
    device = targets.device
    cands = candidate_latents(generator, pairs, params.candidates(), params.seed)
    owner = torch.tensor([t for t, _ in pairs], device=device)
    agree = _agreeing_pixels(generator, predictor, cands, targets, owner, params.batch)
    chosen = best_candidates(agree)
    z0 = cands[torch.arange(len(pairs)), chosen.cpu()].to(device)
    schedule = params.schedule(generator.latent_vectors)
    search = optimize_latents(
        generator, z0, semantic_loss(predictor, targets, owner), schedule, progress
    )
    n_pixels = targets[0].numel()
    return SCSRun(
        initial=z0.cpu(),
        final=search.latents.cpu(),
        chosen=chosen.cpu(),
        initial_pixels=(agree.max(1).values.float() / n_pixels).cpu(),
        loss_initial=search.initial_loss.cpu(),
        loss_final=search.final_loss.cpu(),
    )


# -- agreement (Eq. 7, the authors' aggregate_iou, pooled) --------------------------------------


def pair_counts(
    targets: np.ndarray, predictions: np.ndarray, n_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair and class: |target ∩ prediction| and |target ∪ prediction| pixel counts,
    (pairs, n_class) int64 each. Labels outside [0, n_class) count for no class."""
    t = targets.reshape(len(targets), -1).astype(np.int64)
    p = predictions.reshape(len(predictions), -1).astype(np.int64)
    inter = np.zeros((len(t), n_class), np.int64)
    union = np.zeros((len(t), n_class), np.int64)
    for k in range(n_class):
        in_t, in_p = t == k, p == k
        inter[:, k] = (in_t & in_p).sum(1)
        union[:, k] = (in_t | in_p).sum(1)
    return inter, union


def class_pixels(labels: np.ndarray, n_class: int) -> np.ndarray:
    """(images, n_class) pixel count of each class in each label map (the authors' class
    range is set by the highest class any sample's mask shows: :func:`authors_miou`)."""
    flat = labels.reshape(len(labels), -1).astype(np.int64)
    return np.stack([(flat == k).sum(1) for k in range(n_class)], axis=1).astype(np.int64)


def pair_ious(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """(pairs, n_class - 1) IoU of each non-background class per pair; NaN where the class
    is in neither mask (it does not count), 0 where it is in one mask only."""
    i, u = inter[:, 1:].astype(np.float64), union[:, 1:].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(u > 0, i / np.where(u > 0, u, 1), np.nan)


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean over the non-NaN entries; NaN where there are none (no warning)."""
    counted = ~np.isnan(values)
    n = counted.sum(axis)
    total = np.where(counted, values, 0.0).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def pair_miou(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU of each pair (Appx A): mean IoU over the non-background classes present in the
    target or the prediction (NaN for a pair with none): the terms of Eq. 7."""
    return np.asarray(_nanmean(pair_ious(inter, union), axis=1), dtype=np.float64)


def paper_miou(inter: np.ndarray, union: np.ndarray) -> float:
    """Eq. 7: the mean over pairs of each pair's mIoU."""
    return float(_nanmean(pair_miou(inter, union)))


def authors_miou(inter: np.ndarray, union: np.ndarray, predicted: np.ndarray) -> float:
    """The authors' SCS agreement (``figure/fewshot_scs.py``): ``evaluate_predictions`` takes
    each pair's per-class IoU with background ignored and -1 for a class in neither mask
    (pytorch-lightning's ``iou(absent_score=-1, ignore_index=0)``); ``aggregate_iou`` then
    averages each class over the pairs where it is not -1 and averages the classes that have
    any. Their class range is ``sample_labels.max() + 1`` over all pairs, so a class above the
    highest one any sample's mask shows (``predicted``: per-pair class pixel counts of P*'s
    masks) is left out, even where targets have it."""
    shown = np.flatnonzero(predicted.sum(0) > 0)
    n_class = int(shown.max()) + 1 if len(shown) else 1
    per_class = _nanmean(pair_ious(inter[:, :n_class], union[:, :n_class]), axis=0)
    return float(_nanmean(np.asarray(per_class, dtype=np.float64)))


def pooled_miou(inter: np.ndarray, union: np.ndarray) -> float:
    """Σ∩ / Σ∪ per class over all pairs, then the mean over the non-background classes that
    occur (neither the paper's nor the authors' aggregation: a third view of the counts)."""
    i, u = inter[:, 1:].sum(0).astype(np.float64), union[:, 1:].sum(0).astype(np.float64)
    counted = u > 0
    return float((i[counted] / u[counted]).mean()) if counted.any() else float("nan")


def agreement(inter: np.ndarray, union: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """The three agreements of a set of pairs: ``paper`` (Eq. 7), ``authors``
    (``aggregate_iou``) and ``pooled``."""
    return {
        "paper": paper_miou(inter, union),
        "authors": authors_miou(inter, union, predicted),
        "pooled": pooled_miou(inter, union),
    }


def choose_targets(
    n_store: int, detected: np.ndarray, n_targets: int, source: str, seed: int
) -> np.ndarray:
    """Sorted eval-store indices of the target masks, drawn without replacement (seeded)."""
    pool = np.flatnonzero(detected) if source == "detected" else np.arange(n_store)
    if len(pool) < n_targets:
        raise LinearGanError(
            f"{n_targets} target images are asked for but the eval store has {len(pool)} "
            f"{'detected ' if source == 'detected' else ''}images",
            "use fewer targets, target_source=all, or a larger evaluation store",
        )
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(pool, size=n_targets, replace=False))


def summarize_scs(
    samples: pd.DataFrame, protocol: str, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Table 3 from the per-pair rows: per (predictor, N), each repeat's three agreements
    (over all its targets × samples, as the authors score one result file), then their mean
    and maximum absolute deviation over repeats; and, for the protocol's headline
    aggregation, a 95 % paired bootstrap interval over targets (``n_boot`` resamples,
    ``seed``) of the mean and of its difference to the baseline (the non-LSE predictor)."""
    rows, terms = [], {}
    headline = PROTOCOL_SCS[protocol].headline
    n_targets = int(samples["target"].max()) + 1
    keys = samples.assign(n_shot=samples["n_shot"].astype("Int64"))
    for (predictor, n_shot), group in keys.groupby(["predictor", "n_shot"], dropna=False):
        per_repeat, name = [], (predictor, None if pd.isna(n_shot) else int(n_shot))
        terms[name] = []
        for _, rep in group.groupby(group["repeat"].fillna(-1)):
            counts = [np.stack(rep[c].to_numpy()) for c in ("inter", "union", "predicted")]
            per_repeat.append(
                {**agreement(*counts), "initial": float(rep["agreement_initial"].mean())}
            )
            owner = rep["target"].to_numpy()
            terms[name].append(target_terms(*counts, owner, n_targets, headline))
        row = {
            "predictor": predictor,
            "n_shot": name[1],
            "repeats": len(per_repeat),
            "pairs": len(group) // len(per_repeat),
        }
        for agg, column in (("paper", "agreement"), ("authors", "authors"), ("pooled", "pooled")):
            values = [r[agg] for r in per_repeat]
            dev = "max_dev" if agg == "paper" else f"{column}_max_dev"
            row |= {column: float(np.mean(values)), dev: max_deviation(values)}
        row["agreement_initial"] = float(np.mean([r["initial"] for r in per_repeat]))
        row["headline"] = headline
        rows.append(row)
    baseline = next((name for name in terms if is_baseline_predictor(name[0])), None)
    intervals = paired_intervals(terms, baseline, resample_weights(n_targets, n_boot, seed))
    for row in rows:
        ci = intervals[(row["predictor"], row["n_shot"])]
        row |= {
            "headline_lo": ci.lo,
            "headline_hi": ci.hi,
            "vs_baseline": ci.diff,
            "vs_baseline_lo": ci.diff_lo,
            "vs_baseline_hi": ci.diff_hi,
            "bootstrap": n_boot,
        }
    out = pd.DataFrame(rows)
    return out.astype({"n_shot": "Int64"})


# -- intervals: a paired bootstrap over targets -------------------------------------------------
#
# Every headline agreement is a ratio of sums over pairs, per class: Eq. 7 is Σ(pair mIoU) /
# (pairs), one "class"; aggregate_iou is Σ(pair IoU of class k) / (pairs where k occurs), then
# the class mean. Summing each target's pairs first gives per-target terms (T, K), and a
# bootstrap resample of the targets is a weight per target (how often it was drawn), so every
# resample's agreement is (W @ num) / (W @ den): one matrix product for a thousand resamples.
# The same W serves every predictor, which makes the differences paired.

HEADLINE_AGGREGATIONS = ("paper", "authors")


def resample_weights(n_targets: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_targets) how often each target is drawn when ``n_targets`` targets are
    resampled with replacement, ``n_boot`` times (seeded: the same weights for every predictor
    of a table, so differences between predictors are paired)."""
    rng = np.random.default_rng([seed, 26])
    draws = rng.integers(0, n_targets, size=(n_boot, n_targets))
    offset = np.arange(n_boot)[:, None] * n_targets
    return np.bincount((draws + offset).ravel(), minlength=n_boot * n_targets).reshape(
        n_boot, n_targets
    )


def target_terms(
    inter: np.ndarray,
    union: np.ndarray,
    predicted: np.ndarray,
    owner: np.ndarray,
    n_targets: int,
    aggregation: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-target (numerator, denominator), (n_targets, K) each, of one set of pairs' agreement
    (``owner``: each pair's target ordinal): ``paper`` (Eq. 7, K = 1: the sum and count of the
    target's pair mIoUs) or ``authors`` (``aggregate_iou``, K = classes in the authors' range:
    the sum and count of the target's per-class pair IoUs). :func:`ratio_agreement` of the
    terms with unit weights is :func:`paper_miou` / :func:`authors_miou` of the pairs."""
    if aggregation == "paper":
        values = pair_miou(inter, union)[:, None]
    elif aggregation == "authors":
        shown = np.flatnonzero(predicted.sum(0) > 0)
        n_class = int(shown.max()) + 1 if len(shown) else 1
        values = pair_ious(inter[:, :n_class], union[:, :n_class])
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}, use one of {HEADLINE_AGGREGATIONS}")
    counted = ~np.isnan(values)
    num = np.zeros((n_targets, values.shape[1]))
    den = np.zeros((n_targets, values.shape[1]))
    np.add.at(num, owner, np.where(counted, values, 0.0))
    np.add.at(den, owner, counted.astype(np.float64))
    return num, den


def ratio_agreement(num: np.ndarray, den: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) agreement of each target weighting (``weights`` (B, T)): per term Σw·num / Σw·den,
    then the mean over the terms that count (NaN where none does)."""
    n, d = weights @ num, weights @ den
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(d > 0, n / np.where(d > 0, d, 1), np.nan)
    return np.asarray(_nanmean(ratio, axis=1), dtype=np.float64)


def repeat_agreement(terms: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray) -> np.ndarray:
    """(B,) the mean over repeats (or seeds) of each repeat's agreement under the same target
    weights: Table 3's "mean over repeats", resampled."""
    return np.mean([ratio_agreement(num, den, weights) for num, den in terms], axis=0)


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval of one agreement, and of its paired difference to the
    baseline (NaN where there is no baseline)."""

    lo: float
    hi: float
    diff: float
    diff_lo: float
    diff_hi: float


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``values`` (NaNs skipped)."""
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_intervals(
    terms: Mapping[Hashable, list[tuple[np.ndarray, np.ndarray]]],
    baseline: Hashable | None,
    weights: np.ndarray,
    level: float = 0.95,
) -> dict[Hashable, Interval]:
    """Percentile intervals (``level``) of each entry's agreement (``terms``: name -> per-repeat
    target terms, all over the same targets) and of its difference to ``baseline``'s, every
    entry resampled with the same ``weights`` (paired: a target that is hard for one predictor
    is drawn as often for the other). The difference is the point estimates' difference."""
    ones = np.ones((1, weights.shape[1]))
    point = {name: float(repeat_agreement(t, ones)[0]) for name, t in terms.items()}
    boot = {name: repeat_agreement(t, weights) for name, t in terms.items()}
    out = {}
    for name, values in boot.items():
        lo, hi = percentile_interval(values, level)
        if baseline is None or baseline not in boot:
            diff = diff_lo = diff_hi = float("nan")
        else:
            diff = point[name] - point[baseline]
            diff_lo, diff_hi = percentile_interval(values - boot[baseline], level)
        out[name] = Interval(lo, hi, diff, diff_lo, diff_hi)
    return out


# -- arms that separate candidate choice from optimisation (the experiments of issue #26) -------


def oracle_candidates(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """(pairs,) the candidate the reference scores best against the target (its Eq. 7 term,
    per-pair mIoU; ties: the first): the best any choice among the candidates could do, so
    it bounds the no-optimisation arm of every P from above (``inter`` / ``union`` (pairs,
    n_init, n_class))."""
    pairs, n_init, n_class = inter.shape
    miou = pair_miou(inter.reshape(-1, n_class), union.reshape(-1, n_class))
    return np.nan_to_num(miou.reshape(pairs, n_init), nan=-1.0).argmax(1)

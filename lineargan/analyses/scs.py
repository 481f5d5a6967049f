"""Semantic-Conditional Sampling (Sec 4.2, Appx H, Algorithm 3, Table 3): the science, no I/O.

For a target mask Y: draw n_init latents, keep the one whose predicted mask P(G(z̄)) agrees
with Y on the most pixels (the paper's "argmin" is a typo: the authors' code takes the
highest score), then run Adam on the cross-entropy between P(G(z)) and Y. Every (target,
sample) pair draws its candidates from its own seed, so all predictors P start from the same
candidate pool and a pair's result never depends on how pairs are batched.

Agreement with the target (evaluated by the reference segmenter P*, Eq. 7): the paper averages
each (target, sample) pair's mIoU; the authors' evaluation sums intersections and unions per
class over all pairs before averaging over classes. Both are computed from the same per-pair,
per-class counts (background ignored, Appx A; a class absent from both masks does not count).

Where the paper and the authors' code differ (``protocol``):

| setting | paper (default) | authors |
|---|---|---|
| Adam learning rate | 1e-3 (Appx H) | 0.01 (``manipulation/scs.py``) |
| candidates n_init | 10 for faces | 100 (their FFHQ launcher) |
| loss | cross-entropy | + 1e-3·‖z − z₀‖² |
| headline agreement | mean of per-pair mIoU | pooled over pairs |

Both agreements are always stored; ``protocol`` picks the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, PositiveInt

from lineargan.analyses.fewshot import FewShotParams, max_deviation
from lineargan.baseline import UNetParams
from lineargan.config import FitMethod, ProtocolName, get_profile
from lineargan.errors import LinearGanError
from lineargan.latent_search import EditSpace, LatentSchedule, optimize_latents, semantic_loss
from lineargan.models.protocols import GeneratorAdapter
from lineargan.predictors import SemanticPredictor

# (learning rate, candidates, neighbour weight) per protocol
PROTOCOL_SCS = {"paper": (1e-3, 10, 0.0), "authors": (1e-2, 100, 1e-3)}


class SCSParams(EditSpace):
    """Table 3's settings. ``lr``/``n_init``/``neighbor_weight`` None: the protocol's value."""

    protocol: ProtocolName = "paper"
    targets: PositiveInt = Field(100, description="target masks, drawn from the eval store")
    samples: PositiveInt = Field(10, description="conditional samples per target")
    steps: int = Field(50, ge=0)
    lr: float | None = Field(None, gt=0)
    n_init: PositiveInt | None = None
    neighbor_weight: float | None = Field(None, ge=0)
    target_source: Literal["detected", "all"] = Field(
        "detected",
        description="draw targets among the eval images whose labels came from the reference "
        "segmenter's own detection (detected) or among all of them",
    )
    shots: tuple[PositiveInt, ...] = (1, 4, 8, 16)
    repeats: PositiveInt = Field(5, description="few-shot repeats used (the first ones of Table 2)")
    fit_method: FitMethod = Field(
        "converged",
        description="which few-shot LSEs of Table 2: converged (default) or the paper's "
        "schedule, whose quick-profile fits predict little but skin (docs/results.md, Table 2)",
    )
    baseline: Literal["unet", "reference", "none"] = Field(
        "unet",
        description="the baseline P: the UNet trained on the cache, the run's own segmenter "
        "(when it is differentiable) or none",
    )
    fewshot: FewShotParams = FewShotParams()
    unet: UNetParams = UNetParams()
    seed: int = Field(0, ge=0)
    batch: PositiveInt = Field(64, description="latents per generator call")
    figure_targets: PositiveInt = 4

    def schedule(self) -> LatentSchedule:
        lr, _, neighbor = PROTOCOL_SCS[self.protocol]
        return LatentSchedule(
            steps=self.steps,
            lr=self.lr if self.lr is not None else lr,
            neighbor_weight=self.neighbor_weight if self.neighbor_weight is not None else neighbor,
            prior_weight=0.0,
            batch=self.batch,
        )

    def candidates(self) -> int:
        return self.n_init if self.n_init is not None else PROTOCOL_SCS[self.protocol][1]

    @classmethod
    def for_profile(cls, profile: str, protocol: ProtocolName = "paper", **fields) -> SCSParams:
        """``paper``: 100 targets × 10 samples, N ∈ {1, 4, 8, 16} × 5 repeats (Table 3);
        ``quick``: 12 targets × 2 samples, 2 repeats; ``smoke``: 2 targets × 2 samples, 5
        steps, the smoke few-shot N."""
        get_profile(profile)
        fewshot = fields.pop("fewshot", None) or FewShotParams.for_profile(profile, protocol)
        shots = tuple(n for n in (1, 4, 8, 16) if n in fewshot.shots)
        sizes = {
            "smoke": dict(targets=2, samples=2, steps=5, repeats=1),
            "quick": dict(targets=12, samples=2, repeats=2),
            "paper": {},
        }[profile]
        repeats = min(sizes.pop("repeats", 5), fewshot.repeats)
        return cls(
            protocol=protocol,
            shots=shots,
            repeats=repeats,
            fewshot=fewshot,
            **{**sizes, **fields},
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
    search = optimize_latents(
        generator, z0, semantic_loss(predictor, targets, owner), params.schedule(), progress
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


# -- agreement (Eq. 7 and the authors' pooled variant) ------------------------------------------


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


def pair_miou(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU of each pair (Appx A): mean IoU over the non-background classes present in the
    target or the prediction (NaN for a pair with none)."""
    i, u = inter[:, 1:].astype(np.float64), union[:, 1:].astype(np.float64)
    counted = u > 0
    iou = np.divide(i, u, out=np.zeros_like(i), where=counted)
    n = counted.sum(1)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, iou.sum(1) / np.maximum(n, 1), np.nan)


def pooled_miou(inter: np.ndarray, union: np.ndarray) -> float:
    """The authors' aggregation: per class Σ∩ / Σ∪ over all pairs, then the mean over the
    non-background classes that occur."""
    i, u = inter[:, 1:].sum(0).astype(np.float64), union[:, 1:].sum(0).astype(np.float64)
    counted = u > 0
    return float((i[counted] / u[counted]).mean()) if counted.any() else float("nan")


def agreement(inter: np.ndarray, union: np.ndarray) -> dict[str, float]:
    """Both agreements of a set of pairs: ``paper`` (Eq. 7) and ``pooled`` (authors)."""
    return {
        "paper": float(np.nanmean(pair_miou(inter, union))),
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


def summarize_scs(samples: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Table 3 from the per-pair rows: per (predictor, N), each repeat's Eq. 7 agreement and
    pooled agreement, then their mean and maximum absolute deviation over repeats."""
    rows = []
    keys = samples.assign(n_shot=samples["n_shot"].astype("Int64"))
    for (predictor, n_shot), group in keys.groupby(["predictor", "n_shot"], dropna=False):
        per_repeat = []
        for _, rep in group.groupby(group["repeat"].fillna(-1)):
            inter, union = np.stack(rep["inter"].to_numpy()), np.stack(rep["union"].to_numpy())
            per_repeat.append(
                {**agreement(inter, union), "initial": float(rep["agreement_initial"].mean())}
            )
        paper = [r["paper"] for r in per_repeat]
        pooled = [r["pooled"] for r in per_repeat]
        rows.append(
            {
                "predictor": predictor,
                "n_shot": None if pd.isna(n_shot) else int(n_shot),
                "repeats": len(per_repeat),
                "pairs": len(group) // len(per_repeat),
                "agreement": float(np.mean(paper)),
                "max_dev": max_deviation(paper),
                "pooled": float(np.mean(pooled)),
                "pooled_max_dev": max_deviation(pooled),
                "agreement_initial": float(np.mean([r["initial"] for r in per_repeat])),
                "headline": "paper" if protocol == "paper" else "pooled",
            }
        )
    out = pd.DataFrame(rows)
    return out.astype({"n_shot": "Int64"})

"""Few-shot LSE (Sec 3.3 "Few-shot LSEs", Appx D, Table 2): the science, no I/O.

An N-shot LSE is trained on N labelled images only, with batch size N, so every iteration
sees exactly the same N samples (the paper's PGGAN setting: "each batch is exactly the same").
Iterations (``protocol``): the paper's 2000 / 2000 / 1000 / 500 for N = 1 / 4 / 8 / 16, or the
authors' ``train_fewshot.py`` (AtlantixJJ/LinearGAN at c0627b3, unchanged at a5767a7): 50
epochs of a 128-sample noise dataset at batch 1 with gradients accumulated over N, i.e.
50·⌈128/N⌉ full-batch steps (6,400 / 1,600 / 800 / 400). Their per-epoch callback regenerates
the N images' features with fresh per-layer noise (``randomize_noise=True``, labels kept):
``fresh_noise`` (:class:`EpochRefreshedSamples`), a no-op for a generator without noise inputs
(the embedded DCGAN). Adam
lr 1e-3 divided by 10 after 40 % of the iterations in both: the paper says "the optimizer
setting is the same as in full supervision", whose drop comes at epoch 20 of 50, and the
authors' learner steps ``MultiStepLR([20])`` per epoch. Each N is repeated with disjoint,
randomly drawn training images; Table 2 reports the mean over repeats ± the maximum absolute
deviation from that mean, and the mean relative to a fully trained LSE.

The converged rows minimise the cross-entropy plus a ridge penalty λ (N ≤ 16 images are often
linearly separable, and then the plain loss has no minimum). λ is chosen per fit from
``l2_grid`` by the mIoU on ``holdout`` training-store images that no few-shot draw uses
(:func:`holdout_indices`), never on the evaluation split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from lineargan.config import (
    ALL_FIT_METHODS,
    FitMethod,
    Frozen,
    ProtocolName,
    RunConfig,
    Schedule,
    SolverParams,
)
from lineargan.errors import LinearGanError

PAPER_SHOTS = (1, 4, 8, 16)
PAPER_ITERATIONS = (2000, 2000, 1000, 500)
# The authors' train_fewshot.py: max_epochs=50 over NoiseDataModule(train_size=128,
# batch_size=1) with accumulate_grad_batches=N, i.e. ⌈128/N⌉ optimiser steps per epoch.
AUTHORS_EPOCHS = 50
AUTHORS_EPOCH_SAMPLES = 128
# Candidate ridge penalties of converged few-shot fits (on the channel-normalised weights),
# one decade apart around the 1e-3 the converged rows used before it was chosen on held-out
# images.
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
# Training-store images outside every few-shot draw on which λ is chosen, per profile.
PROFILE_HOLDOUT = {"smoke": 16, "quick": 128, "paper": 512}


def authors_iterations(shots: Sequence[int]) -> tuple[int, ...]:
    """The authors' optimiser steps per N: 50 epochs of ⌈128/N⌉ (6,400 / 1,600 / 800 / 400
    for N = 1 / 4 / 8 / 16)."""
    return tuple(AUTHORS_EPOCHS * epoch_steps(n) for n in shots)


class FewShotParams(Frozen):
    """Shots N, iterations per N (aligned with ``shots``), repeats per N, seed, Adam lr and
    the fraction of the iterations after which it drops ÷10 (1.0: never); for the converged
    rows, the ridge penalties to choose from and the held-out images that choose."""

    protocol: ProtocolName = Field(
        "paper",
        description="whose iteration counts :meth:`for_run` gives: the paper's Table 2 or "
        "the authors' train_fewshot.py (50 epochs of ⌈128/N⌉ steps)",
    )
    shots: tuple[PositiveInt, ...] = PAPER_SHOTS
    iterations: tuple[PositiveInt, ...] = PAPER_ITERATIONS
    repeats: PositiveInt = 5
    seed: int = Field(0, ge=0)
    lr: float = Field(1e-3, gt=0)
    lr_drop_at: float = Field(0.4, gt=0, le=1)
    methods: tuple[FitMethod, ...] = Field(
        ALL_FIT_METHODS,
        description="schedule = the iterations above with Adam; converged = L-BFGS to the "
        "stopping rule of ``solver`` on the loss + a ridge penalty λ from ``l2_grid``",
    )
    solver: SolverParams = Field(
        SolverParams(),
        description="the converged fits' stopping rule (its l2 is λ, set per candidate)",
    )
    l2_grid: tuple[PositiveFloat, ...] = Field(
        L2_GRID,
        description="candidate ridge penalties λ of a converged fit; the one with the best "
        "held-out mIoU is kept (one value: fixed λ)",
    )
    holdout: PositiveInt = Field(
        PROFILE_HOLDOUT["paper"],
        description="training-store images outside every few-shot draw on which λ is chosen",
    )
    fresh_noise: bool = Field(
        False,
        description="the authors' per-epoch callback: every ⌈epoch_samples/N⌉ steps of the "
        "schedule, the N images' features are generated again with fresh per-layer noise "
        "(labels kept); a no-op for a generator without noise inputs",
    )
    epoch_samples: PositiveInt = Field(
        AUTHORS_EPOCH_SAMPLES, description="samples of one authors' epoch (fresh_noise)"
    )

    @model_validator(mode="after")
    def _check(self) -> FewShotParams:
        if len(self.shots) != len(self.iterations):
            raise LinearGanError(
                f"{len(self.shots)} shots but {len(self.iterations)} iteration counts",
                "give one iteration count per entry of shots",
            )
        if len(set(self.shots)) != len(self.shots):
            raise LinearGanError(f"repeated entries in shots {self.shots}", "list each N once")
        if len(set(self.l2_grid)) != len(self.l2_grid):
            raise LinearGanError(f"repeated entries in l2_grid {self.l2_grid}", "list each λ once")
        return self

    @classmethod
    def for_run(cls, config: RunConfig, after: Mapping[str, Frozen] | None = None) -> FewShotParams:
        """``paper``: Table 2 settings (the run's protocol's iterations); ``quick``:
        iterations / 4; ``smoke``: N ∈ {1, 4}, 2 repeats, 20 iterations. Held-out images per
        profile."""
        profile, protocol = config.profile, config.protocol
        holdout = PROFILE_HOLDOUT[profile]
        if profile == "smoke":
            return cls(
                protocol=protocol,
                shots=(1, 4),
                iterations=(20, 20),
                repeats=2,
                holdout=holdout,
                fresh_noise=protocol == "authors",
            )
        full = PAPER_ITERATIONS if protocol == "paper" else authors_iterations(PAPER_SHOTS)
        if profile == "quick":
            full = tuple(max(1, i // 4) for i in full)
        return cls(
            protocol=protocol, iterations=full, holdout=holdout, fresh_noise=protocol == "authors"
        )


def choose_train_indices(n_total: int, n_shot: int, repeats: int, seed: int) -> list[np.ndarray]:
    """``repeats`` sorted index arrays of ``n_shot`` images each, pairwise disjoint, drawn at
    random from ``range(n_total)``; the same (seed, n_shot) always gives the same draw."""
    if n_shot * repeats > n_total:
        raise LinearGanError(
            f"{repeats} disjoint repeats of {n_shot} images need {n_shot * repeats} training "
            f"images, the store has {n_total}",
            "use a larger training store or fewer repeats/shots",
        )
    rng = np.random.default_rng([seed, n_shot])
    draw = rng.permutation(n_total)[: n_shot * repeats].reshape(repeats, n_shot)
    return [np.sort(row) for row in draw]


def holdout_indices(n_total: int, params: FewShotParams) -> np.ndarray:
    """The training-store images λ is chosen on: ``params.holdout`` of those no draw of
    :func:`choose_train_indices` uses (any N, any repeat), seeded, sorted. Fewer when the
    store has fewer left; none left is an error."""
    used = {
        int(i)
        for n in params.shots
        for row in choose_train_indices(n_total, n, params.repeats, params.seed)
        for i in row
    }
    free = np.setdiff1d(np.arange(n_total), np.fromiter(used, dtype=np.int64, count=len(used)))
    if not len(free):
        raise LinearGanError(
            f"every one of the {n_total} training images is a few-shot training image, so "
            "none is left to choose the ridge penalty on",
            "use a larger training store, fewer repeats, or one value in fewshot.l2_grid",
        )
    rng = np.random.default_rng([params.seed, n_total, 7])
    return np.sort(rng.permutation(free)[: params.holdout])


def choose_l2(scores: dict[float, float]) -> float:
    """The λ with the best held-out mIoU (NaN counts as worst); a tie goes to the larger λ,
    the more regularised fit."""
    return max(scores, key=lambda lam: (-np.inf if np.isnan(scores[lam]) else scores[lam], lam))


def repeat_seed(seed: int, n_shot: int, repeat: int) -> int:
    """The torch seed (initial weights) of one (n_shot, repeat) fit."""
    return int(np.random.SeedSequence([seed, n_shot, repeat]).generate_state(1)[0])


def fewshot_schedule(
    n_shot: int, iterations: int, lr: float = 1e-3, drop_at: float = 0.4
) -> Schedule:
    """One phase of ``iterations`` epochs, each a single batch of all ``n_shot`` samples; lr
    ÷10 from the first epoch after ``drop_at`` of them (at least one epoch at full lr;
    ``drop_at`` = 1 puts the drop after the last epoch, so it never happens)."""
    return Schedule(
        phases=((iterations, n_shot),),
        samples_per_epoch=n_shot,
        lr=lr,
        lr_drop_epoch=max(1, round(drop_at * iterations)),
    )


class FixedSamples:
    """A :class:`~lineargan.training.BatchSource` over a fixed, in-memory set of samples.

    Batches cycle through the samples in order; with ``batch_size == len(samples)`` every
    batch is exactly the whole set, as few-shot training needs.
    """

    def __init__(self, features: list[np.ndarray], labels: np.ndarray) -> None:
        if any(len(f) != len(labels) for f in features):
            raise ValueError("every feature array needs one entry per label")
        self.features = features
        self.labels = labels
        self._offset = 0

    def __len__(self) -> int:
        return len(self.labels)

    def skip(self, n: int) -> None:
        """Move on ``n`` samples (a resumed fit starts where the interrupted one stopped)."""
        self._offset = int((self._offset + n) % len(self.labels))

    def next_batch(self, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
        n = len(self.labels)
        if self._offset == 0 and batch_size == n:
            return list(self.features), self.labels
        take = (self._offset + np.arange(batch_size)) % n
        self._offset = int((self._offset + batch_size) % n)
        return [f[take] for f in self.features], self.labels[take]


class EpochRefreshedSamples(FixedSamples):
    """:class:`FixedSamples` whose features are replaced at the start of every epoch of
    ``epoch_steps`` full batches by ``refresh(epoch)`` (labels kept): the authors' per-epoch
    callback, which runs the same latents through the generator again with fresh per-layer
    noise. Epoch 0 serves the features it was given. Counting by samples served, a resumed
    fit (``skip``) refreshes to the epoch it resumes in."""

    def __init__(
        self,
        features: list[np.ndarray],
        labels: np.ndarray,
        refresh: Callable[[int], list[np.ndarray]],
        epoch_steps: int,
    ) -> None:
        super().__init__(features, labels)
        self.refresh = refresh
        self.epoch_samples = epoch_steps * len(labels)
        self.served = 0
        self.epoch = 0

    def skip(self, n: int) -> None:
        super().skip(n)
        self.served += n

    def next_batch(self, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
        epoch = self.served // self.epoch_samples
        if epoch != self.epoch:
            self.features, self.epoch = self.refresh(epoch), epoch
        self.served += batch_size
        return super().next_batch(batch_size)


def epoch_steps(n_shot: int, epoch_samples: int = AUTHORS_EPOCH_SAMPLES) -> int:
    """Full-batch steps per epoch of the authors' few-shot learner: ⌈epoch_samples / N⌉."""
    return math.ceil(epoch_samples / n_shot)


def max_deviation(values: Sequence[float]) -> float:
    """Maximum absolute deviation from the mean (Table 2's ± column)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.abs(v - v.mean()).max()) if v.size else float("nan")


def summarize_runs(
    runs: pd.DataFrame, reference_miou: float | dict[str, float | None] | None = None
) -> pd.DataFrame:
    """Per (method, n_shot): mean mIoU over repeats, max deviation, and the ratio to the fully
    trained LSE of the same method (``reference_miou``: one number, or one per method; NaN when
    not given). ``runs`` needs columns n_shot, miou (and method; absent = the schedule).

    Also how each row was fitted: ``stopped_by_rule``, the repeats whose fit met its stopping
    rule (a schedule's is its iteration count, always met; a converged fit's is the solver's
    tolerance, column ``converged``), and ``l2``, the ridge penalties chosen (column ``l2``;
    "" for the schedule), e.g. "1e-03 ×3, 1e-02 ×2"."""
    if "method" not in runs:
        runs = runs.assign(method="schedule")
    refs = reference_miou if isinstance(reference_miou, dict) else None
    rows = []
    for (method, n_shot), group in runs.groupby(["method", "n_shot"], sort=True):
        ref_m = refs.get(method) if refs is not None else reference_miou
        ref = float("nan") if ref_m is None else float(ref_m)
        mean = float(group["miou"].mean())
        rows.append(
            {
                "method": method,
                "n_shot": int(n_shot),
                "repeats": len(group),
                "mean_miou": mean,
                "max_dev": max_deviation(group["miou"].to_numpy()),
                "mean_miou_detected": float(group["miou_detected"].mean())
                if "miou_detected" in group
                else float("nan"),
                "ratio_to_full": mean / ref if ref_m is not None else float("nan"),
                "reference_miou": ref,
                "stopped_by_rule": stopped_by_rule(group),
                "l2": l2_counts(group),
            }
        )
    return pd.DataFrame(rows)


def stopped_by_rule(group: pd.DataFrame) -> int:
    """Fits of ``group`` that met their stopping rule: ``converged`` True (a solver's
    tolerance), or no ``converged`` value at all (a schedule, which stops by its count)."""
    if "converged" not in group:
        return len(group)
    flags = group["converged"]
    return int(sum(True if pd.isna(f) else bool(f) for f in flags))


def l2_counts(group: pd.DataFrame) -> str:
    """The ridge penalties chosen in ``group`` with their counts ("" when none was)."""
    if "l2" not in group:
        return ""
    values = group["l2"].dropna()
    counts = values.value_counts().sort_index()
    return ", ".join(f"{lam:.0e} ×{n}" for lam, n in counts.items())

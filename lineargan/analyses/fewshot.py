"""Few-shot LSE (Sec 3.3 "Few-shot LSEs", Appx D, Table 2): the science, no I/O.

An N-shot LSE is trained on N labelled images only, with batch size N, so every iteration
sees exactly the same N samples (the paper's PGGAN setting: "each batch is exactly the same";
our generators have no per-layer noise to resample). Iterations: 2000 / 2000 / 1000 / 500 for
N = 1 / 4 / 8 / 16, Adam lr 1e-3 divided by 10 after 40 % of the iterations: the paper says
"the optimizer setting is the same as in full supervision", whose drop comes at epoch 20 of 50
(40 %), and the authors' few-shot learner drops at the same fraction. Each N is repeated with
disjoint, randomly drawn training images; Table 2 reports the mean over repeats ± the maximum
absolute deviation from that mean, and the mean relative to a fully trained LSE.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pydantic import Field, PositiveInt, model_validator

from lineargan.config import (
    ALL_FIT_METHODS,
    FitMethod,
    Frozen,
    Schedule,
    SolverParams,
    get_profile,
)
from lineargan.errors import LinearGanError

PAPER_SHOTS = (1, 4, 8, 16)
# Ridge penalty of converged few-shot fits: N ≤ 16 images are often linearly separable, and
# then the plain cross-entropy has no minimum to converge to.
FEWSHOT_L2 = 1e-3
PAPER_ITERATIONS = (2000, 2000, 1000, 500)


class FewShotParams(Frozen):
    """Shots N, iterations per N (aligned with ``shots``), repeats per N, seed, Adam lr and
    the fraction of the iterations after which it drops ÷10 (1.0: never)."""

    shots: tuple[PositiveInt, ...] = PAPER_SHOTS
    iterations: tuple[PositiveInt, ...] = PAPER_ITERATIONS
    repeats: PositiveInt = 5
    seed: int = Field(0, ge=0)
    lr: float = Field(1e-3, gt=0)
    lr_drop_at: float = Field(0.4, gt=0, le=1)
    methods: tuple[FitMethod, ...] = Field(
        ALL_FIT_METHODS,
        description="schedule = the iterations above with Adam; converged = L-BFGS to the "
        "certified optimum of the ridge-penalised loss (``solver``)",
    )
    solver: SolverParams = SolverParams(l2=FEWSHOT_L2)

    @model_validator(mode="after")
    def _check(self) -> FewShotParams:
        if len(self.shots) != len(self.iterations):
            raise LinearGanError(
                f"{len(self.shots)} shots but {len(self.iterations)} iteration counts",
                "give one iteration count per entry of shots",
            )
        if len(set(self.shots)) != len(self.shots):
            raise LinearGanError(f"repeated entries in shots {self.shots}", "list each N once")
        return self

    @classmethod
    def for_profile(cls, profile: str) -> FewShotParams:
        """``paper``: Table 2 settings; ``quick``: iterations / 4; ``smoke``: N ∈ {1, 4},
        2 repeats, 20 iterations."""
        get_profile(profile)
        if profile == "smoke":
            return cls(shots=(1, 4), iterations=(20, 20), repeats=2)
        if profile == "quick":
            return cls(iterations=tuple(max(1, i // 4) for i in PAPER_ITERATIONS))
        return cls()


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


def max_deviation(values: Sequence[float]) -> float:
    """Maximum absolute deviation from the mean (Table 2's ± column)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.abs(v - v.mean()).max()) if v.size else float("nan")


def summarize_runs(
    runs: pd.DataFrame, reference_miou: float | dict[str, float | None] | None = None
) -> pd.DataFrame:
    """Per (method, n_shot): mean mIoU over repeats, max deviation, and the ratio to the fully
    trained LSE of the same method (``reference_miou``: one number, or one per method; NaN when
    not given). ``runs`` needs columns n_shot, miou (and method; absent = the schedule)."""
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
            }
        )
    return pd.DataFrame(rows)

"""Few-shot LSE (Table 2): which LSEs to train. The parameters and the rest of the math are
shared with SCS, SIE and ``lineargan-edit`` and live in :mod:`lineargan.analyses.fewshot`."""

from __future__ import annotations

import numpy as np

from lineargan.analyses.fewshot import FewShotParams, choose_train_indices
from lineargan.config import FitMethod


def fewshot_runs(
    params: FewShotParams, n_store: int
) -> list[tuple[FitMethod, int, int, int, np.ndarray]]:
    """Every (method, n_shot, iterations, repeat, training indices) of ``params``; every N is
    drawn first, so a store too small for the largest N fails before any training."""
    all_draws = [
        choose_train_indices(n_store, n, params.repeats, params.seed) for n in params.shots
    ]
    return [
        (method, n_shot, iterations, repeat, indices)
        for method in params.methods
        for n_shot, iterations, draws in zip(
            params.shots, params.iterations, all_draws, strict=True
        )
        for repeat, indices in enumerate(draws)
    ]

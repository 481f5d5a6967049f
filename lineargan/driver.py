"""The one resumable training driver: every fit method runs under :func:`drive`.

A fit method (the Adam schedule, L-BFGS, the plateau-stopped Adam, the baseline UNet) is a small
object with its state, one step and a stopping rule (:class:`FitMethod`). What every method
needs around that loop is written once, here: resuming from the partial state a
:class:`FitCheckpoint` holds (the torch RNG included), saving it every ``save_every_s`` seconds,
the terminal bar, and the loss history and progress calls every ``log_every`` steps. A killed fit
rerun with the same checkpoint resumes at its last save and ends with the weights an
uninterrupted fit would have: the method's state restores its weights, optimiser and data
position, and saves happen between steps, where nothing is half done.

Snapshots (Fig 8, mIoU during training): given a :class:`SnapshotSink`, the driver hands it the
model's weights after every step whose index is a power of two (:func:`snapshot_points`), so
the evolution of a fit can be evaluated later without evaluating anything during the fit.
Taking a snapshot copies weights and nothing else: the RNG stream, the steps and the final
weights are those of a fit without snapshots. A resumed fit takes again the snapshots after its
resume point (the same weights, since the resumed steps are the same); those before it were
handed over before the kill.
"""

from __future__ import annotations

import math
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import torch
from tqdm import tqdm

ProgressFn = Callable[[int, int, float], None]  # (iteration, total, loss)


class FitCheckpoint(Protocol):
    """Where a fit keeps its partial state (``storage.checkpoints.PartialFit`` on disk), so a
    killed fit resumes instead of starting over. ``load`` returns None when there is nothing
    usable to resume from."""

    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...


class SnapshotSink(Protocol):
    """Where a fit's snapshots go (``storage.checkpoints.FitSnapshots`` on disk): the model's
    weights after step ``iteration``, as CPU tensors the sink may keep."""

    def save(self, iteration: int, weights: dict[str, torch.Tensor]) -> None: ...


def is_snapshot_point(iteration: int) -> bool:
    """Whether the driver snapshots after step ``iteration``: the powers of two, a geometric
    set that covers a fit of any length (6,656 paper-schedule steps or an L-BFGS solve of a
    hundred) with a handful of points, dense where training changes fastest."""
    return iteration > 0 and iteration & (iteration - 1) == 0


def snapshot_points(iterations: int) -> list[int]:
    """The steps a fit of ``iterations`` steps was snapshotted after (1, 2, 4, ... ≤ it)."""
    return [1 << k for k in range(max(iterations, 0).bit_length())]


def weights_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as detached CPU copies: a snapshot that later steps cannot change."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class FitResult:
    """What every fit reports: the steps taken, its time, its last loss (running, certified or
    best held-out, as the method defines it) and the logged losses."""

    iterations: int
    seconds: float
    final_loss: float
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: int = 0  # the iteration a resumed fit started at (0: from scratch)


@dataclass
class Certificate(FitResult):
    """How a fit that stops on a rule of its own ended, and whether it met the rule
    (``converged`` False: it hit its iteration cap first). ``grad_norm`` and ``rel_change`` are
    the convex solver's criteria (NaN for a plateau-stopped fit); ``evaluations`` counts full
    passes over the data (objective or held-out loss)."""

    converged: bool = False
    evaluations: int = 0
    grad_norm: float = math.nan
    rel_change: float = math.nan


R = TypeVar("R", bound=FitResult, covariant=True)


class FitMethod(ABC, Generic[R]):
    """One way of fitting a model: its state, one step and a stopping rule.

    ``total`` caps the steps (and sizes the bar); saves happen only before steps whose index is a
    multiple of ``save_stride`` (a method whose counters settle only at periodic checks asks
    for those); a step's loss is logged every ``log_every`` steps. ``seed`` (None: none) seeds
    torch's RNG before a fresh start. ``loss`` is the value the fit reports as its final loss.
    A fit's seconds count from the method's construction, which may already read the data.
    """

    desc = "fit"
    save_stride = 1
    log_every = 1
    seed: int | None = None
    total: int
    loss: float

    def __init__(self) -> None:
        self.created = time.perf_counter()

    def begin(self) -> float | None:
        """Start from scratch (not called on resume); returns a loss to record at step 0."""
        return None

    @abstractmethod
    def step(self, iteration: int) -> float | None:
        """Take step ``iteration`` (1-based); returns the loss to show and log, if any."""

    def done(self) -> bool:
        """True once the method's own rule stops the fit before ``total`` steps."""
        return False

    @abstractmethod
    def state_dict(self) -> dict:
        """Everything but the iteration, history and RNG needed to continue exactly; tensors,
        numbers, lists and dicts only (partial states are read with ``weights_only``)."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved state: weights, optimiser, data position (``state`` also holds
        the driver's ``iteration``)."""

    def weights(self) -> dict[str, torch.Tensor]:
        """The model's weights at this point of the fit (a snapshot, see
        :class:`SnapshotSink`): CPU copies, taken without touching the RNG or anything a later
        step reads."""
        raise NotImplementedError(f"{type(self).__name__} takes no snapshots")

    @abstractmethod
    def finish(self, result: FitResult) -> R:
        """Leave the model as the fit's answer (eval mode, best or solved weights) and return
        the method's result built on ``result``."""


class QuietBar(tqdm):
    """A fit's terminal bar, without tqdm's monitor thread: the fit stays single-threaded."""

    monitor_interval = 0


def drive(
    method: FitMethod[R],
    *,
    checkpoint: FitCheckpoint | None = None,
    save_every_s: float = 120.0,
    progress: ProgressFn | None = None,
    log_every: int | None = None,
    snapshots: SnapshotSink | None = None,
) -> R:
    """Run ``method`` to its end, resuming from ``checkpoint`` when it holds a partial state.

    Torch's RNG is seeded with ``method.seed``; a resume restores the saved RNG state instead.
    Before each step, once ``save_every_s`` seconds have passed since the last save, the
    method's state, the iteration, the history and the RNG state are saved. A step's loss is
    recorded (and passed to ``progress``) every ``log_every`` steps (default: the method's
    cadence) and at the last step. ``snapshots`` receives the weights after every step that
    :func:`is_snapshot_point` names.
    """
    log_every = method.log_every if log_every is None else log_every
    if method.seed is not None:
        torch.manual_seed(method.seed)
    saved = checkpoint.load() if checkpoint is not None else None
    history: list[tuple[int, float]] = []
    if saved is None:
        iteration = 0
        first = method.begin()
        if first is not None:
            history.append((0, first))
    else:
        method.load_state_dict(saved)
        if "rng" in saved:  # partial states written before the driver saved it for every method
            torch.set_rng_state(saved["rng"])
        iteration = int(saved["iteration"])
        history = [(int(i), float(v)) for i, v in saved["history"]]
    start, last_save = iteration, time.monotonic()
    # a terminal bar only (under Dask workers stderr is not a TTY and `progress` is the logged
    # channel); it reads the step's loss and nothing else, so the fit is the same without it
    tty = sys.stderr.isatty()
    with QuietBar(
        total=method.total, desc=method.desc, unit="it", leave=False, disable=not tty
    ) as bar:
        bar.update(start)
        while iteration < method.total and not method.done():
            if (
                checkpoint is not None
                and iteration % method.save_stride == 0
                and time.monotonic() - last_save >= save_every_s
            ):
                checkpoint.save(
                    {
                        **method.state_dict(),
                        "iteration": iteration,
                        "history": history,
                        "rng": torch.get_rng_state(),
                    }
                )
                last_save = time.monotonic()
            iteration += 1
            value = method.step(iteration)
            if value is not None:
                if not bar.disable:
                    bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                if iteration % log_every == 0 or iteration == method.total:
                    history.append((iteration, value))
                    if progress is not None:
                        progress(iteration, method.total, value)
            if snapshots is not None and is_snapshot_point(iteration):
                snapshots.save(iteration, method.weights())
            bar.update(1)
    result = FitResult(
        iterations=iteration,
        seconds=time.perf_counter() - method.created,
        final_loss=method.loss,
        loss_history=history,
        resumed_from=start,
    )
    return method.finish(result)

"""The one fit-or-reuse routine: every place that trains an extractor goes through it.

Table 1's fits, category selection's round 2, the few-shot LSEs and the layer-wise LSE differ
only in what they feed the fit loop (a stream over the store, remapped labels, N samples held
in memory) and in what else their result depends on. A :class:`FitJob` names both; the job's
key (fit config + training-store digest + ``key_extra``) picks the checkpoint directory, so a
finished fit is reloaded instead of retrained and every checkpoint records the same metadata
shape (:func:`fit_metadata`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from lineargan.config import FitConfig, fit_label
from lineargan.convex import Chunks, LBFGSSolve
from lineargan.device import resolve_device
from lineargan.driver import FitMethod, FitResult, ProgressFn, R, drive
from lineargan.errors import LinearGanError
from lineargan.extractors import LSE, SemanticExtractor, build_extractor
from lineargan.plateau import PlateauAdam
from lineargan.training import BatchSource, ScheduledAdam, to_tensors
from storage.checkpoints import (
    FitSnapshots,
    PartialFit,
    is_finished,
    load_extractor,
    save_extractor,
)
from storage.feature_store import FeatureStore, StoreSpec
from storage.layout import fit_target
from storage.stream import ChunkStream
from storage.target import Target
from tasks.feature_source import FeatureSource
from tasks.process import tune_process

SourceFactory = Callable[[], AbstractContextManager[BatchSource]]


def fit_key(cfg: FitConfig, train_digest: str, extra: dict | None = None) -> str:
    """A fit is identified by its configuration, the exact training store it reads and
    whatever else changes its result (``extra``: kept classes, sample indices, α, ...)."""
    extra = extra or {}
    if {"fit", "train"} & set(extra):
        raise ValueError("key_extra may not redefine 'fit' or 'train'")
    payload: dict[str, Any] = {"fit": cfg.model_dump(mode="json"), "train": train_digest, **extra}
    blob = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class FitJob:
    """One extractor fit: what to train, how it is named on disk, what it depends on.

    ``prefix`` names the checkpoint directory (``fits/<prefix>-<key16>``); ``class_names`` are
    the classes the extractor predicts (fewer than the store's after category selection);
    ``fit_kwargs`` go to :class:`lineargan.training.ScheduledAdam` (``layer_loss_weight``,
    ``ignore_index``) and ``metadata`` into the checkpoint's config.json. ``snapshots`` keeps
    the weights at the driver's snapshot points in the fit directory (Table 1's fits, for
    Fig 8); it changes nothing about the fit, so it is not part of the key.
    """

    cfg: FitConfig
    prefix: str
    class_names: tuple[str, ...]
    key_extra: dict = field(default_factory=dict)
    fit_kwargs: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    snapshots: bool = False

    def key(self, spec: StoreSpec) -> str:
        return fit_key(self.cfg, spec.digest(), self.key_extra)

    def build(self, spec: StoreSpec) -> SemanticExtractor:
        kwargs = self.cfg.extractor_kwargs()
        torch.manual_seed(self.cfg.seed)  # initial weights are part of what the key promises
        return build_extractor(
            self.cfg.extractor,
            n_class=len(self.class_names),
            dims=[s[0] for s in spec.layer_shapes],
            **kwargs,
        )


def fit_metadata(
    job: FitJob,
    key: str,
    fit_dir: str,
    train_url: str,
    spec: StoreSpec,
    result: FitResult,
    device: torch.device,
) -> dict:
    """What a checkpoint's config.json records about its fit (and what the tables read back)."""
    return {
        "extractor": job.cfg.extractor,
        "method": job.cfg.method,
        "fit_label": fit_label(job.cfg.extractor, job.cfg.method),
        "fit_key": key,
        "fit_dir": str(fit_dir),
        "fit_config": job.cfg.model_dump(mode="json"),
        "train_store": train_url,
        "train_digest": spec.digest(),
        "generator": spec.generator,
        "generator_sha256": spec.generator_sha256,
        "store_policy": spec.store_policy,  # which features it reads (lineargan-edit needs it)
        "segmenter": spec.segmenter,
        "class_names": list(job.class_names),
        **job.metadata,
        "iterations": result.iterations,
        "train_seconds": round(result.seconds, 3),
        "final_loss": result.final_loss,
        "device": str(device),
    }


def stream_source(store: FeatureStore, seed: int, device: str = "auto") -> SourceFactory:
    """Shuffled batches streamed from the store (the full-supervision source), prefetched
    into pinned memory when they go to a GPU."""
    pin = resolve_device(device).type == "cuda"
    return lambda: ChunkStream(store, seed=seed, pin_memory=pin)


# Training data a converged (full-batch) fit may hold in memory as float32 tensors; beyond it,
# every function evaluation decodes the store again (correct, slower).
DEFAULT_SOLVER_MEMORY = 4 << 30


def solver_memory_budget() -> int:
    """Bytes of float32 training data a converged fit may keep (``LINEARGAN_SOLVER_MEMORY_MB``)."""
    mb = os.environ.get("LINEARGAN_SOLVER_MEMORY_MB")
    return DEFAULT_SOLVER_MEMORY if mb in (None, "") else int(float(mb) * (1 << 20))


def full_batch(
    store: FeatureStore, indices: list[int] | None = None, budget: int | None = None
) -> Chunks:
    """Every training sample (or ``indices``) as the chunks a full-batch solver sums over:
    decoded once into float32 tensors when they fit ``budget``, else re-read per pass."""
    spec = store.spec
    n = spec.n if indices is None else len(indices)
    per_sample = 4 * sum(c * h * w for c, h, w in spec.layer_shapes) + 8 * spec.resolution**2
    budget = solver_memory_budget() if budget is None else budget
    cpu = torch.device("cpu")
    if indices is not None:
        held = [to_tensors(*store.read_samples(indices), cpu)]
        return lambda: iter(held)
    if n * per_sample <= budget:
        held = [to_tensors(c.features, c.labels, cpu) for _, c in store.iter_chunks()]
        return lambda: iter(held)
    return lambda: ((c.features, c.labels) for _, c in store.iter_chunks())


def holdout_split(n_chunks: int, fraction: float) -> tuple[list[int], list[int]]:
    """(training chunks, held-out chunks): the last ⌈fraction·n⌉ chunks (at least one, and at
    least one left to train on) are held out to decide when a nonlinear fit has plateaued."""
    if n_chunks < 2:
        raise LinearGanError(
            "a plateau-stopped fit needs a store of at least 2 chunks (one is held out)",
            "use a larger training store or a smaller chunk size",
        )
    k = min(n_chunks - 1, max(1, math.ceil(fraction * n_chunks)))
    return list(range(n_chunks - k)), list(range(n_chunks - k, n_chunks))


@dataclass(frozen=True)
class _Run:
    """One fit's inputs, in the shape every entry of :data:`FIT_METHODS` takes them."""

    model: SemanticExtractor
    job: FitJob
    store: FeatureStore
    source: SourceFactory | None
    chunks: Chunks | None
    dev: torch.device
    progress: ProgressFn | None
    partial: PartialFit | None
    snapshots: FitSnapshots | None = None

    def drive(self, method: FitMethod[R]) -> R:
        """Run ``method`` under the one driver, with this fit's progress, partial state and
        snapshots."""
        return drive(
            method,
            checkpoint=self.partial,
            save_every_s=fit_save_seconds(),
            progress=self.progress,
            snapshots=self.snapshots,
        )

    @property
    def ignore_index(self) -> int:
        return self.job.fit_kwargs.get("ignore_index", -100)


def _scheduled(run: _Run) -> tuple[FitResult, dict]:
    """The paper's Adam schedule on shuffled batches (by default streamed from the store)."""
    cfg = run.job.cfg
    with (run.source or stream_source(run.store, cfg.seed, str(run.dev)))() as batches:
        method = ScheduledAdam(
            run.model,
            batches,
            cfg.schedule,
            run.store.spec.resolution,
            run.dev,
            seed=cfg.seed,
            **run.job.fit_kwargs,
        )
        result = run.drive(method)
    return result, {"resumed_from": result.resumed_from}


def _solved(run: _Run) -> tuple[FitResult, dict]:
    """The LSE's convex optimum by L-BFGS, summed over ``chunks`` (by default the store)."""
    assert run.job.cfg.solver is not None and isinstance(run.model, LSE)
    method = LBFGSSolve(
        run.model,
        run.chunks or full_batch(run.store),
        run.store.spec.resolution,
        run.dev,
        run.job.cfg.solver,
        ignore_index=run.ignore_index,
    )
    cert = run.drive(method)
    return cert, {
        "converged": cert.converged,
        "grad_norm": cert.grad_norm,
        "rel_change": cert.rel_change,
        "evaluations": cert.evaluations,
        "resumed_from": cert.resumed_from,
    }


def _plateau(run: _Run) -> tuple[FitResult, dict]:
    """A nonlinear extractor trained until the loss on held-out chunks of the store plateaus."""
    spec, cfg = run.store.spec, run.job.cfg
    assert cfg.solver is not None
    train_ids, held_ids = holdout_split(spec.n_chunks, cfg.solver.holdout_fraction)
    held = [run.store.read_chunk(i) for i in held_ids]
    pin = run.dev.type == "cuda"
    with ChunkStream(run.store, seed=cfg.seed, chunk_ids=train_ids, pin_memory=pin) as batches:
        method = PlateauAdam(
            run.model,
            batches,
            lambda: ((c.features, c.labels) for c in held),
            spec.resolution,
            run.dev,
            cfg.solver,
            seed=cfg.seed,
            ignore_index=run.ignore_index,
        )
        cert = run.drive(method)
    return cert, {
        "converged": cert.converged,
        "grad_norm": None,
        "heldout_loss": cert.final_loss,
        "heldout_chunks": held_ids,
        "resumed_from": cert.resumed_from,
    }


# How each kind of fit trains; each returns its typed result and what its checkpoint records
# beyond :func:`fit_metadata`.
FIT_METHODS: dict[str, Callable[[_Run], tuple[FitResult, dict]]] = {
    "schedule": _scheduled,
    "lbfgs": _solved,
    "plateau": _plateau,
}


def fit_method(cfg: FitConfig) -> str:
    """The :data:`FIT_METHODS` entry that trains ``cfg``: the paper's schedule, or for a
    converged fit L-BFGS on the LSE's convex loss and the held-out plateau for the NSEs."""
    if cfg.method == "schedule":
        return "schedule"
    return "lbfgs" if cfg.extractor == "LSE" else "plateau"


def fit_save_seconds() -> float:
    """How often a fit saves its partial state (``LINEARGAN_FIT_SAVE_SECONDS``, default 120)."""
    value = os.environ.get("LINEARGAN_FIT_SAVE_SECONDS")
    return 120.0 if value in (None, "") else float(value)


def fit_or_reuse(
    store: FeatureStore,
    train_url: str,
    job: FitJob,
    results_root: str,
    source: SourceFactory | None = None,
    device: str = "auto",
    progress: ProgressFn | None = None,
    chunks: Chunks | None = None,
) -> dict:
    """Train ``job`` on ``store`` (batches from ``source``, by default the shuffled stream;
    a converged fit sums over ``chunks``, by default the whole store), or reload its finished
    checkpoint; returns the checkpoint's metadata with ``reused``."""
    spec = store.spec
    key = job.key(spec)
    fit_dir = fit_target(results_root, job.prefix, key).location
    if is_finished(fit_dir):
        _, meta = load_extractor(fit_dir)
        return {**meta, "reused": True}
    Target(results_root).ensure_writable()
    tune_process()
    dev = resolve_device(device)
    model = job.build(spec)
    partial = PartialFit(fit_dir)
    snapshots = FitSnapshots(fit_dir) if job.snapshots else None
    run = _Run(model, job, store, source, chunks, dev, progress, partial, snapshots)
    result, extra = FIT_METHODS[fit_method(job.cfg)](run)
    meta = {**fit_metadata(job, key, fit_dir, train_url, spec, result, dev), **extra}
    save_extractor(model, fit_dir, metadata=meta)
    partial.clear()
    return {**meta, "reused": False}


def fit_extractor(
    train_url: str,
    cfg: FitConfig,
    results_root: str,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> dict:
    """Table 1's fit of ``cfg.extractor`` on all classes of the store at ``train_url``."""
    store = FeatureSource.open(Target(train_url), require_complete=True)
    job = table1_job(cfg, store.spec.class_names)
    return fit_or_reuse(store, train_url, job, results_root, device=device, progress=progress)


def table1_job(cfg: FitConfig, class_names: tuple[str, ...]) -> FitJob:
    """Table 1's fit of ``cfg``: named by its label (``fits/lse-converged-<key16>``), with
    snapshots of its weights during training (Fig 8 evaluates them)."""
    prefix = fit_label(cfg.extractor, cfg.method).replace(":", "-")
    return FitJob(cfg=cfg, prefix=prefix, class_names=class_names, snapshots=True)

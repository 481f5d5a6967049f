"""Typed, validated configuration shared by the library, the flows and the CLI.

Flows take these pydantic models as parameters, so Prefect validates a deployment run before it
starts, and the same objects are hashed to key stores and fits (same config → same key → reuse).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from lineargan.errors import LinearGanError, UnknownNameError
from lineargan.store_policy import StorePolicy

ExtractorName = Literal["LSE", "NSE-1", "NSE-2"]
# Where the paper and the authors' code disagree, which one a run follows (docs/protocol.md).
ProtocolName = Literal["paper", "authors"]
ALL_EXTRACTORS: tuple[ExtractorName, ...] = ("LSE", "NSE-1", "NSE-2")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def config_hash(self) -> str:
        """sha256 of the canonical JSON: the identity used to reuse finished work."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


# Options that decide where or how fast a model runs, not what it computes: they are left
# out of a store's identity, so changing them reuses the store.
RUNTIME_OPTIONS = ("device", "batch_size")


def identity_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the runtime-only ones (:data:`RUNTIME_OPTIONS`)."""
    return {k: v for k, v in options.items() if k not in RUNTIME_OPTIONS}


def options_json(options: Any) -> str:
    """Canonical JSON of model options: hashable (model caches key on it) and stable (stores
    and their paths record it)."""
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


class ModelChoice(BaseModel):
    """Which generator and segmenter, with their weights and adapter options.

    ``generator_options`` / ``segmenter_options`` are keyword arguments of the registered
    factories (e.g. ``{"latent_space": "trunc-wp", "truncation": 0.7}`` for a StyleGAN,
    ``{"resolution": 256}`` for an adapter built at another size); they are checked against the
    factory's signature before any work starts. Options change the images or labels, so they
    are part of a store's fingerprint; checkpoints enter through their weights' hash.
    """

    generator: str = "dcgan-digiface"
    generator_checkpoint: str | None = Field(
        None, description="weights file for the generator; None uses the adapter's default"
    )
    generator_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options of the generator adapter (JSON)"
    )
    generator_precision: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="bfloat16 runs the generator's forward under autocast (2-3x faster on "
        "recent GPUs; float32's range, so no overflow); part of a store's identity",
    )
    segmenter: str = "dlib-face68"
    segmenter_checkpoint: str | None = Field(
        None, description="weights file for the segmenter; None uses its default"
    )
    segmenter_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options of the segmenter (JSON)"
    )

    @field_validator("generator_checkpoint", "segmenter_checkpoint")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        # stores record where their weights are: a relative path would break on resume from
        # another working directory (or on a Dask worker started elsewhere)
        if path is None or "://" in path:
            return path
        return str(Path(path).expanduser().absolute())

    @model_validator(mode="after")
    def _check_models(self) -> ModelChoice:
        from lineargan.models.registry import check_generator_options, check_segmenter_options

        # unknown names and options are one-line errors here, before any weights are read
        check_generator_options(self.generator, self.generator_kwargs())
        check_segmenter_options(self.segmenter, self.segmenter_kwargs())
        return self

    def generator_kwargs(self) -> dict[str, Any]:
        from lineargan.models.registry import model_kwargs

        return model_kwargs(self.generator_checkpoint, self.generator_options)

    def segmenter_kwargs(self) -> dict[str, Any]:
        from lineargan.models.registry import model_kwargs

        return model_kwargs(self.segmenter_checkpoint, self.segmenter_options)

    def models(self) -> dict[str, Any]:
        """The model fields alone, to build another config with the same models."""
        return {k: getattr(self, k) for k in ModelChoice.model_fields}


class DatasetConfig(ModelChoice, Frozen):
    """One cached dataset: which models, which split, how many samples, from which seed."""

    split: Literal["train", "eval"] = "train"
    seed: int = Field(0, ge=0)
    n: PositiveInt = 512
    chunk_size: PositiveInt = Field(64, le=4096)
    store_policy: StorePolicy = Field(
        default_factory=StorePolicy,
        description="which generator features the store serves and whether it writes them",
    )

    @model_validator(mode="after")
    def _check_regeneration(self) -> DatasetConfig:
        if self.store_policy.regenerate and self.generator_options.get("randomize_noise"):
            raise LinearGanError(
                "randomize_noise draws new noise on every call, so regenerated features would "
                "not belong to the stored images and labels",
                "drop randomize_noise, or store the features (store_policy features: stored)",
            )
        return self

    @property
    def store_variant(self) -> str:
        """ "" for default options and policy, else a short hash of them: stores of one
        generator under different options or policies live side by side instead of refusing
        each other."""
        parts: list = [
            identity_options(self.generator_options),
            identity_options(self.segmenter_options),
            self.store_policy.identity(),
        ]
        if self.generator_precision != "float32":
            parts.append(self.generator_precision)
        if not any(parts):
            return ""
        return hashlib.sha256(options_json(parts).encode()).hexdigest()[:8]  # type: ignore[arg-type]


class Schedule(Frozen):
    """Appx D schedule: phases of (epochs, batch size) over epochs of ``samples_per_epoch``.

    The paper: 2 epochs at batch 1, 16 at batch 4, 32 at batch 64, 1,024 samples per epoch
    (6,656 iterations), Adam lr 1e-3 "reduced with a factor of 10 at epoch 20". The authors'
    code agrees: ``MultiStepLR(milestones=[20])`` stepped once per epoch, so the 0-based epoch
    20 (the third epoch of the batch-64 phase) is the first at lr 1e-4.
    """

    phases: tuple[tuple[PositiveInt, PositiveInt], ...] = ((2, 1), (16, 4), (32, 64))
    samples_per_epoch: PositiveInt = 1024
    lr: float = Field(1e-3, gt=0)
    lr_drop_epoch: int = Field(20, ge=0)  # 0-based epoch at which lr /= 10
    lr_drop_factor: float = Field(0.1, gt=0, le=1)

    @property
    def n_epochs(self) -> int:
        return sum(e for e, _ in self.phases)

    def iterations(self) -> int:
        return sum(self.samples_per_epoch // b for _, b in self.epochs())

    def epochs(self) -> list[tuple[int, int]]:
        """(epoch index, batch size) for every epoch in order.

        A batch never exceeds an epoch (small profiles shrink the batch-64 phase to one batch
        per epoch instead of drawing 64 samples for an 8-sample epoch).
        """
        out, k = [], 0
        for n_ep, batch in self.phases:
            for _ in range(n_ep):
                out.append((k, min(batch, self.samples_per_epoch)))
                k += 1
        return out


class SolverParams(Frozen):
    """When a converged fit stops.

    The LSE (:mod:`lineargan.convex`, L-BFGS): ‖∇f‖_∞ ≤ ``grad_tol`` (in the solver's
    channel-normalised variables) and a relative loss change ≤ ``change_tol`` over the last
    iteration. NSE-1/NSE-2 (:mod:`lineargan.plateau`, Adam at ``lr`` on batches of ``batch``):
    the held-out loss (on ``holdout_fraction`` of the training store) gains less than
    ``min_improvement`` for ``patience`` checks, ``check_every`` steps apart, twice (lr ÷10 in
    between). ``max_iterations`` caps either (the fit is then recorded as not converged).
    """

    grad_tol: float = Field(1e-4, gt=0)
    change_tol: float = Field(1e-6, gt=0)
    max_iterations: PositiveInt = 1000
    history: PositiveInt = 20
    lr: float = Field(1e-3, gt=0)
    batch: PositiveInt = 64
    holdout_fraction: float = Field(0.1, gt=0, lt=1)
    check_every: PositiveInt = 100
    patience: PositiveInt = 3
    min_improvement: float = Field(1e-3, ge=0)
    l2: float = Field(
        0.0,
        ge=0,
        description="ridge penalty (l2/2)·‖T·diag(r)‖² on the channel-normalised weights; 0 for "
        "full supervision. A few labelled images can be separated exactly by a linear map, "
        "and then the unpenalised loss has no minimum (it falls toward 0 as ‖T‖ grows)",
    )


FitMethod = Literal["schedule", "converged"]
ALL_FIT_METHODS: tuple[FitMethod, ...] = ("schedule", "converged")
# Extractors with a converged fit: the LSE's loss is convex (L-BFGS to a stationarity tolerance); the
# NSEs train until their held-out loss plateaus.
CONVERGED_EXTRACTORS: tuple[ExtractorName, ...] = ("LSE", "NSE-1", "NSE-2")


def fit_label(extractor: str, method: str) -> str:
    """How a fit is named in a run: "LSE" for the paper's schedule, "LSE:converged" otherwise."""
    return extractor if method == "schedule" else f"{extractor}:{method}"


# The stopping rule per profile: ``paper`` as tight as float32 full-batch sums allow; ``quick``
# and ``smoke`` stop the LSE once an iteration gains less than 0.01 % of the loss. Measured on
# the quick stores: the quick rule stops after 105 L-BFGS iterations at 42.3 % mIoU, the paper
# rule 351 iterations later at 43.0 %. ``smoke`` checks the NSEs' held-out loss on small
# batches so its plateau fits take seconds.
PROFILE_SOLVERS: dict[str, SolverParams] = {
    "smoke": SolverParams(
        grad_tol=1e-3, change_tol=1e-4, max_iterations=80, batch=8, check_every=10, patience=2
    ),
    "quick": SolverParams(grad_tol=1e-3, change_tol=1e-4, max_iterations=1500, check_every=50),
    "paper": SolverParams(max_iterations=20000),
}
# Which extractors get a converged fit per profile. ``quick`` leaves out NSE-2: one of its
# batch-64 steps takes ~3.5 s on 2 CPU cores, so a plateau-stopped fit would take about an hour.
PROFILE_CONVERGED: dict[str, tuple[ExtractorName, ...]] = {
    "smoke": ("LSE", "NSE-1", "NSE-2"),
    "quick": ("LSE", "NSE-1"),
    "paper": ("LSE", "NSE-1", "NSE-2"),
}


class FitConfig(Frozen):
    """One extractor fit on one cached training set.

    ``method``: ``schedule`` trains with Adam under ``schedule`` (Appx D); ``converged`` trains
    towards the optimum and stops on ``solver``'s stopping rule (``schedule`` is then unused).
    """

    extractor: ExtractorName = "LSE"
    method: FitMethod = "schedule"
    schedule: Schedule = Schedule()
    solver: SolverParams | None = Field(
        None, description="stopping rule of a converged fit (None: defaults; unused otherwise)"
    )
    seed: int = Field(0, ge=0)
    ksize: int | None = Field(
        None,
        ge=1,
        le=7,
        description="NSE kernel size; None = the extractor's default (NSE-1: 1, NSE-2: 3)",
    )
    layer_weights: Literal["none", "softplus"] = Field(
        "none",
        description="per-layer weights of LSE / NSE-1: none = Eq. 1's plain sum; softplus = the "
        "authors' code (softplus-normalised weights trained at 10x lr)",
    )

    @model_validator(mode="before")
    @classmethod
    def _solver_default(cls, data: Any) -> Any:
        # one key per fit: a converged fit always records its tolerances, a scheduled one never
        if isinstance(data, dict):
            if data.get("method") == "converged" and data.get("solver") is None:
                data = {**data, "solver": SolverParams()}
            elif data.get("method", "schedule") == "schedule":
                data = {**data, "solver": None}
        return data

    @model_validator(mode="after")
    def _check(self) -> FitConfig:
        if self.method == "converged" and self.extractor not in CONVERGED_EXTRACTORS:
            raise LinearGanError(
                f"no converged fit for {self.extractor} yet",
                f"converged fits exist for {list(CONVERGED_EXTRACTORS)}",
            )
        if self.layer_weights != "none" and self.extractor == "NSE-2":
            raise LinearGanError(
                "NSE-2 has no per-layer outputs to weight", "use layer_weights=none for NSE-2"
            )
        return self

    def extractor_kwargs(self) -> dict:
        """Constructor arguments beyond (n_class, dims), only those that differ from defaults."""
        out: dict = {}
        if self.extractor != "LSE" and self.ksize is not None:
            out["ksize"] = self.ksize
        if self.layer_weights != "none":
            out["layer_weights"] = self.layer_weights
        return out


class Profile(Frozen):
    """Sizes of a run: ``smoke`` (seconds), ``quick`` (minutes on 2 CPU cores), ``paper``."""

    name: str
    n_train: PositiveInt
    n_eval: PositiveInt
    chunk_size: PositiveInt
    samples_per_epoch: PositiveInt
    figure_samples: PositiveInt = 6


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", n_train=96, n_eval=64, chunk_size=32, samples_per_epoch=4, figure_samples=4
    ),
    "quick": Profile(name="quick", n_train=2048, n_eval=512, chunk_size=64, samples_per_epoch=128),
    "paper": Profile(
        name="paper", n_train=51200, n_eval=10000, chunk_size=64, samples_per_epoch=1024
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise UnknownNameError("profile", name, list(PROFILES))
    return PROFILES[name]


class RunConfig(ModelChoice):
    """Parameters of a Table 1 reproduction (the ``reproduce`` flow)."""

    model_config = ConfigDict(extra="forbid")

    profile: str = "quick"
    extractors: tuple[ExtractorName, ...] = ALL_EXTRACTORS
    analyses: tuple[str, ...] | None = Field(
        None,
        description="registered analyses to run beside Table 1 (None: all of them; an empty "
        "list: Table 1 only). Names and parameters are checked against the analysis registry "
        "before any work starts",
    )
    analysis_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-analysis overrides of the profile's parameters, e.g. "
        '{"cosine_similarity": {"t1": 5, "t2": 4000}}',
    )
    protocol: ProtocolName = Field(
        "paper",
        description="where the paper and the authors' code disagree, which to follow "
        "(docs/protocol.md, 'Paper vs the authors' code'): authors = softplus layer weights in the "
        "LSE and NSE-1 fits",
    )
    fit_methods: tuple[FitMethod, ...] = Field(
        ALL_FIT_METHODS,
        description="Table 1 / Table 2 row kinds: schedule = the paper's Adam schedule; "
        "converged = trained until a stopping rule says it converged: L-BFGS stationarity for "
        "the LSE, a held-out plateau for the NSEs",
    )
    converged_extractors: tuple[ExtractorName, ...] | None = Field(
        None,
        description="extractors that also get a converged fit (None: the profile's choice; "
        "quick leaves out NSE-2, whose plateau fit takes about an hour on 2 CPU cores)",
    )
    train_seed: int = Field(0, ge=0)
    eval_seed: int = Field(1, ge=0)
    fit_seed: int = Field(0, ge=0)
    data_root: str | None = None
    results_root: str | None = None
    device: str = "auto"
    dask_address: str | None = Field(
        None, description="address of an existing Dask scheduler; None starts a LocalCluster"
    )
    n_workers: PositiveInt = 2
    store_policy: StorePolicy = Field(
        default_factory=StorePolicy,
        description="what the stores keep of the generator's features (docs/models.md, 'Store "
        'policies\'): e.g. {"features": "regenerate"} or {"max_resolution": 64}',
    )
    # Optional overrides of the profile's sizes.
    n_train: PositiveInt | None = None
    n_eval: PositiveInt | None = None
    samples_per_epoch: PositiveInt | None = None

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        get_profile(self.profile)  # raises a one-line error naming the valid profiles
        if not self.extractors:
            raise LinearGanError("no extractors selected", f"choose from {list(ALL_EXTRACTORS)}")
        if self.train_seed == self.eval_seed:
            raise LinearGanError(
                "train_seed equals eval_seed: evaluation would reuse training images",
                "pick different seeds",
            )
        return self

    @property
    def resolved_profile(self) -> Profile:
        base = get_profile(self.profile)
        updates = {
            k: v
            for k, v in {
                "n_train": self.n_train,
                "n_eval": self.n_eval,
                "samples_per_epoch": self.samples_per_epoch,
            }.items()
            if v is not None
        }
        return base.model_copy(update=updates)

    def dataset(self, split: Literal["train", "eval"]) -> DatasetConfig:
        p = self.resolved_profile
        return DatasetConfig(
            **self.models(),
            split=split,
            seed=self.train_seed if split == "train" else self.eval_seed,
            n=p.n_train if split == "train" else p.n_eval,
            chunk_size=p.chunk_size,
            store_policy=self.store_policy,
        )

    def fit(self, extractor: ExtractorName, method: FitMethod = "schedule") -> FitConfig:
        sched = Schedule(samples_per_epoch=self.resolved_profile.samples_per_epoch)
        weights = "softplus" if self.protocol == "authors" and extractor != "NSE-2" else "none"
        return FitConfig(
            extractor=extractor,
            method=method,
            schedule=sched,
            solver=PROFILE_SOLVERS.get(self.profile) if method == "converged" else None,
            seed=self.fit_seed,
            layer_weights=weights,
        )

    def table1_fits(self) -> dict[str, FitConfig]:
        """Every Table 1 fit by label (:func:`fit_label`): each extractor under each method
        it supports."""
        converged = self.converged_extractors
        if converged is None:
            converged = PROFILE_CONVERGED.get(self.profile, CONVERGED_EXTRACTORS)
        return {
            fit_label(e, m): self.fit(e, m)
            for m in self.fit_methods
            for e in self.extractors
            if m == "schedule" or e in converged
        }

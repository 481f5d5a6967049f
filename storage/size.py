"""How big a run's stores will be, said before the cache run starts, and refused over a budget.

Each store is checked against its own budget, and the stores one run writes are checked
together against the free space of a local ``data_root``: a train and an eval store that each
fit can together fill the disk. The estimate is uncompressed (zstd usually makes float16
features ~2.4x smaller, images and labels more), so stores that pass fit on disk whatever their
content.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lineargan.config import DatasetConfig
from lineargan.errors import LinearGanError
from lineargan.models import GeneratorAdapter
from lineargan.store_policy import StorePolicy
from storage.feature_store import StoreSpec
from storage.target import Target

GB = 1e9


def human(n: float) -> str:
    """Bytes as MB below a gigabyte, GB above (the sizes users compare with a disk)."""
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / 1e6:.1f} MB"


def estimated_bytes(spec: StoreSpec, policy: StorePolicy) -> int:
    """Uncompressed bytes of a store of ``spec`` (its layer shapes are the served ones)."""
    return spec.n * policy.bytes_per_sample(spec.resolution, spec.latent_dim, spec.layer_shapes)


def default_budget(target: Target) -> float | None:
    """90 % of the free space where a local store would go; None (no limit) elsewhere."""
    if not target.is_local:
        return None
    path = Path(target.path)
    while not path.exists():
        path = path.parent
    return 0.9 * shutil.disk_usage(path).free


@dataclass(frozen=True)
class StoreSize:
    """What one store of a run will still write."""

    split: str
    remaining: int  # uncompressed bytes of the chunks still to compute
    allowed_over: bool  # its policy sets allow_over_budget: left out of the run's total


def check_run_budget(sizes: Sequence[StoreSize], data_root: Target) -> int:
    """Refuse a run whose stores together would write more than the free-space budget of a
    local ``data_root``; returns the bytes all of them will write. Stores allowed over budget
    are written whatever happens, so the others must fit in what they leave. (``budget_gb``
    bounds each store on its own; this bound is the disk's.)"""
    counted = [s for s in sizes if not s.allowed_over and s.remaining > 0]
    total = sum(s.remaining for s in counted)
    allowed = sum(s.remaining for s in sizes if s.allowed_over)
    budget = default_budget(data_root)
    if budget is None or not counted or total <= budget - allowed:
        return total + allowed
    parts = ", ".join(f"{s.split} {human(s.remaining)}" for s in counted)
    left = f", {human(allowed)} of it taken by stores allowed over budget" if allowed else ""
    raise LinearGanError(
        f"this run's stores still need about {human(total)} ({parts}), over the budget of "
        f"{human(budget)} (90 % of the free space under {data_root.url}{left})",
        "free space, use another data_root, choose a smaller store_policy for one of them, or "
        "set allow_over_budget on the stores you accept over budget",
    )


def _alternatives(cfg: DatasetConfig, spec: StoreSpec, generator: GeneratorAdapter) -> str:
    """Sizes of the policies that would shrink this store, for the refusal message."""
    shapes = generator.layer_shapes()
    names = generator.layer_names
    options = {
        '{"features": "regenerate"}': StorePolicy(features="regenerate"),
        '{"max_resolution": 64}': StorePolicy(max_resolution=64),
        '{"max_resolution": 256}': StorePolicy(max_resolution=256),
    }
    sizes = []
    for text, policy in options.items():
        served = policy.served(names, shapes)[1]
        size = spec.n * policy.bytes_per_sample(spec.resolution, spec.latent_dim, served)
        if size < spec.n * cfg.store_policy.bytes_per_sample(
            spec.resolution, spec.latent_dim, spec.layer_shapes
        ):
            sizes.append(f"{text} {human(size)}")
    return "; ".join(sizes) or "none is smaller"


def check_store_budget(
    cfg: DatasetConfig,
    spec: StoreSpec,
    target: Target,
    generator: GeneratorAdapter,
) -> int:
    """Print the store's estimated size; refuse it over the budget unless allowed."""
    policy = cfg.store_policy
    need = estimated_bytes(spec, policy)
    budget = policy.budget_gb * GB if policy.budget_gb is not None else default_budget(target)
    kept = (
        "no features (regenerated on read)"
        if policy.regenerate
        else (f"{len(spec.layer_names)} feature layers")
    )
    print(
        f"store {target.url}: {spec.n} samples, {kept}, about {human(need)} uncompressed"
        + (f" (budget {human(budget)})" if budget is not None else "")
    )
    if budget is not None and need > budget and not policy.allow_over_budget:
        raise LinearGanError(
            f"the {cfg.split} store needs about {human(need)}, over the budget of {human(budget)}",
            f"choose a smaller store_policy ({_alternatives(cfg, spec, generator)}), a layer "
            "subset ('layers'), or set budget_gb / allow_over_budget",
        )
    return need

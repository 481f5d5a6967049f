"""Labelled synthetic datasets: what an export is asked for, and how confident its labels are.

A saved extractor (LSE or NSE, few-shot included) labels every image its generator draws, so N
latents give N image–mask pairs (DatasetGAN's use of a few annotations). Not every label is
equally good; the exporter records one confidence per image and keeps the most confident:

* ``max_softmax``: the mean over pixels of the largest class probability (1: the extractor is
  sure of every pixel; 1/C: it cannot tell the C classes apart);
* ``entropy``: 1 − (mean pixel entropy) / log C, the same scale (1 sure, 0 uniform);
* ``ensemble``: DatasetGAN's uncertainty (Zhang et al. 2021, §3.3) over several repeats of a
  few-shot fit: the mean over pixels of the Jensen–Shannon divergence of the members'
  distributions, recorded as ``uncertainty``; confidence is 1 − JS / log M for M members
  (the JS divergence of M distributions is at most log M). The mask is then the argmax of
  the members' mean distribution (DatasetGAN votes over its ensemble the same way).

Plain PyTorch/NumPy: no storage, no Prefect (``tasks/export.py`` runs it, ``storage/
dataset_export.py`` writes what it returns).
"""

from __future__ import annotations

import math
import re
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from lineargan.config import Frozen
from lineargan.errors import LinearGanError

ConfidenceMeasure = Literal["max_softmax", "entropy", "ensemble"]

# A few-shot fit's directory name: fewshot-n<N>-r<repeat>[-<variant>]-<key16>; its repeats
# differ only in the repeat index and the key.
_REPEAT = re.compile(r"^(?P<head>.+-n\d+)-r(?P<repeat>\d+)(?P<tail>(?:-.+)?)-[0-9a-f]{16}$")


class ExportConfig(Frozen):
    """What ``python -m flows.export`` makes: ``n_images`` images of the generator that made ``fit``,
    labelled by that fit, in shards of ``shard_size`` under ``out``.

    ``fit``: a fit directory's name under ``<results_root>/fits`` (``lineargan table`` and the
    run's index name them), a unique prefix of one, or a directory path / URL. ``seed``: image
    ``i``'s latent is drawn with seed ``hash(seed, i)`` alone (:func:`latent_seed`), so an
    export of more images extends a smaller one with the same first images. ``keep_fraction``
    and ``min_confidence`` choose the ``kept`` images (the most confident); they change the
    index only, never a shard, so a rerun with another filter rewrites one Parquet file.
    """

    fit: str = Field(min_length=1)
    n_images: int = Field(gt=0, description="images to export (N)")
    out: str | None = Field(
        None,
        description="export root (local path or fsspec URL); default <results_root>/exports/<fit>-seed<seed>",
    )
    results_root: str | None = None
    seed: int = Field(0, ge=0)
    shard_size: int = Field(256, gt=0, description="images per shard (the unit of resumption)")
    confidence: ConfidenceMeasure = "max_softmax"
    keep_fraction: float = Field(1.0, gt=0, le=1, description="keep the most confident fraction")
    min_confidence: float | None = Field(None, ge=0, le=1)
    device: str = "auto"
    dask_address: str | None = None
    n_workers: int = Field(2, gt=0)

    @model_validator(mode="after")
    def _shard_not_larger(self) -> ExportConfig:
        if self.shard_size > 65536:
            raise ValueError("shard_size must be at most 65536 images")
        return self

    def n_shards(self) -> int:
        return -(-self.n_images // self.shard_size)

    def shard_ids(self, shard: int) -> range:
        """The image ids of shard ``shard`` (the last may be short)."""
        start = shard * self.shard_size
        return range(start, min(self.n_images, start + self.shard_size))


def latent_seed(seed: int, image_id: int) -> int:
    """The seed image ``image_id`` of an export with ``seed`` draws its latent with: a fixed
    mix of both (splitmix64), so every image is reproducible on its own
    (``generator.sample_latents(1, latent_seed(seed, i))``) and exports with different seeds
    share no latents."""
    x = (seed * 0x9E3779B97F4A7C15 + image_id + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) >> 1  # 63 bits: torch.Generator.manual_seed takes it


def repeat_siblings(fit_name: str, names: list[str]) -> list[str]:
    """The repeats of few-shot fit ``fit_name`` among ``names`` (itself included, sorted by
    repeat): the same name but for the repeat index and the key. A fit that is no repeat
    (Table 1's) has none besides itself."""
    own = _REPEAT.match(fit_name)
    if own is None:
        return [fit_name]
    found = []
    for name in names:
        m = _REPEAT.match(name)
        if m and m["head"] == own["head"] and m["tail"] == own["tail"]:
            found.append((int(m["repeat"]), name))
    return [name for _, name in sorted(found)]


def confidence(probs: torch.Tensor, measure: Literal["max_softmax", "entropy"]) -> torch.Tensor:
    """Per-image confidence in [0, 1] of class probabilities ``probs`` (B, C, H, W)."""
    if measure == "max_softmax":
        return probs.amax(1).mean((1, 2))
    if measure == "entropy":
        n_class = probs.shape[1]
        return 1 - pixel_entropy(probs).mean((1, 2)) / math.log(n_class)
    raise LinearGanError(f"unknown confidence measure {measure!r}", "use max_softmax or entropy")


def pixel_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each pixel's class distribution: (B, C, H, W) → (B, H, W)."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(1)


def ensemble_uncertainty(member_probs: list[torch.Tensor]) -> torch.Tensor:
    """DatasetGAN's per-image uncertainty: the mean over pixels of the Jensen–Shannon
    divergence of the members' distributions, H(mean) − mean(H); (B,) in [0, log M]."""
    if len(member_probs) < 2:
        raise LinearGanError(
            "ensemble uncertainty needs at least 2 repeats of the few-shot fit, found "
            f"{len(member_probs)}",
            "use a fit of a few-shot run with repeats ≥ 2, or confidence max_softmax",
        )
    stacked = torch.stack(member_probs)
    js = pixel_entropy(stacked.mean(0)) - torch.stack(
        [pixel_entropy(p) for p in member_probs]
    ).mean(0)
    return js.clamp_min(0).mean((1, 2))


def class_areas(labels: np.ndarray, n_class: int) -> np.ndarray:
    """Each image's fraction of pixels per class: (B, H, W) → (B, C) float32, rows sum to 1."""
    flat = labels.reshape(len(labels), -1).astype(np.int64)
    counts = np.stack([np.bincount(row, minlength=n_class)[:n_class] for row in flat])
    return (counts / flat.shape[1]).astype(np.float32)


def keep_most_confident(
    conf: np.ndarray, fraction: float = 1.0, minimum: float | None = None
) -> np.ndarray:
    """Which images to keep: the ``⌈fraction·N⌉`` most confident (ties broken by the lower
    index, so the choice is deterministic), and of those only the ones at ``minimum`` or
    above."""
    conf = np.asarray(conf, dtype=np.float64)
    k = math.ceil(fraction * len(conf))
    order = np.lexsort((np.arange(len(conf)), -conf))  # by confidence desc, then index
    keep = np.zeros(len(conf), bool)
    keep[order[:k]] = True
    if minimum is not None:
        keep &= conf >= minimum
    return keep


# Two-sided 95 % Student t quantiles by degrees of freedom (no scipy here); beyond 30: normal.
_T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}


def mean_interval(values: np.ndarray) -> tuple[float, float]:
    """(mean, half-width of its 95 % t-interval) of independent repeats; half-width NaN for
    one value. Degrees of freedom between the tabulated ones take the next smaller entry's
    (wider) quantile."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()) if v.size else float("nan"), float("nan")
    df = v.size - 1
    t = 1.96 if df > 30 else _T95[max(k for k in _T95 if k <= df)]
    return float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(v.size))

"""The baseline segmenter of SCS and SIE, and the surrogate UNet trained on the cached pairs.

The paper's baseline P is the evaluation segmenter itself (a face UNet). Where the run's
reference segmenter is differentiable it is the baseline (:func:`default_baseline`); the
embedded default's (dlib landmarks) has no gradient, so :class:`UNetTraining` fits a
surrogate :class:`~lineargan.models.unet.SegmentationUNet` fully supervised on the training
store's (image, label) pairs held in memory, all but a held-out part (``UNetParams.holdout``)
that its settings are chosen on, and :func:`segmenter_iou` scores any segmenter against the
reference labels with the paper's IoU (Appx A). The science only: reading the store and the
checkpoint files live in ``tasks/baseline.py`` and ``storage/checkpoints.py``.

Training is plain pixel cross-entropy with Adam, lr ÷10 after a fraction of the steps, on
batches drawn by one seeded generator (epoch permutations and the flips), so a seed gives the
same weights on every CPU rerun. Horizontal flips are the only augmentation: the face classes
(eyebrows, eyes, ...) name both sides at once, so a mirrored label is still a correct label,
and flips double the distinct training images at no cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt

from lineargan.config import Frozen, RunConfig
from lineargan.driver import FitMethod, FitResult
from lineargan.errors import LinearGanError
from lineargan.metrics import IoUResult, SubsetIoU
from lineargan.models.protocols import Segmenter
from lineargan.models.registry import segmenter_is_differentiable
from lineargan.models.unet import SegmentationUNet

# Label value the loss skips (a segmenter's "no class here"); the dlib segmenter never uses it.
IGNORE_LABEL = 255

# The baseline P of SCS and SIE: the surrogate UNet trained on the cache, the run's reference
# segmenter itself, or none.
BaselineName = Literal["unet", "reference", "none"]
BASELINE_HELP = (
    "the baseline P: 'reference', the run's own segmenter (the paper's: 'exactly the same as "
    "the one used in evaluation'; it must be differentiable), 'unet', a surrogate UNet trained "
    "on the cache to mimic it, or 'none'. A run's default is 'reference' when its segmenter is "
    "differentiable, else 'unet'"
)


def is_baseline_predictor(predictor: object) -> bool:
    """Whether a predictor named in SCS/SIE rows is the baseline P: any P that is not an LSE
    (the surrogate UNet or the reference segmenter, under whatever name it was stored), so the
    Table 3 and Fig 5 summaries pair their differences against the same row."""
    return isinstance(predictor, str) and predictor not in ("", "LSE")


def default_baseline(config: RunConfig) -> BaselineName:
    """The run's baseline P (the paper's protocol wherever the run allows it): the reference
    segmenter when it is differentiable (``face-parser-unet``, ``deeplabv3-ade20k``, a user's
    :class:`~lineargan.models.DifferentiableSegmenter`), else (dlib) the surrogate UNet.

    Resolved in the params' ``for_run``, so the analysis key holds the baseline actually used:
    a dlib run keeps its ``"unet"`` key, and no key could stand for two different P's if
    this rule ever changed (which an ``"auto"`` value in the key would allow)."""
    return "reference" if segmenter_is_differentiable(config.segmenter) else "unet"


class UNetParams(Frozen):
    """How the baseline UNet is trained: ``steps`` Adam steps on batches of ``batch`` images
    at ``lr``, ÷10 after ``lr_drop_at`` of the steps (1.0: never); the net is
    ``SegmentationUNet(width, depth)`` with initial weights and batch order from ``seed``."""

    steps: PositiveInt = 1600
    batch: PositiveInt = 16
    lr: float = Field(2e-3, gt=0)
    lr_drop_at: float = Field(0.75, gt=0, le=1)
    width: PositiveInt = 8
    depth: PositiveInt = Field(3, le=6)
    flip: bool = Field(True, description="random horizontal flips (label-safe for face classes)")
    class_balance: float = Field(
        0.25,
        ge=0,
        le=1,
        description="cross-entropy class weights (median pixel frequency / frequency) ** this; "
        "0 = plain cross-entropy",
    )
    seed: int = Field(0, ge=0)
    holdout: float = Field(
        0.125,
        ge=0,
        lt=1,
        description="fraction of the training store (its last images) the UNet does not train "
        "on; its mIoU on them is in the fit's metadata, and any choice of these settings is "
        "scored on it, never on the evaluation split SCS targets come from (0: none)",
    )

    def split(self, n: int) -> int:
        """How many of the training store's ``n`` images the UNet trains on (the first ones);
        the rest are its held-out part. A positive ``holdout`` keeps at least one image out
        and at least one in."""
        if self.holdout == 0 or n < 2:
            return n
        return min(n - 1, max(1, n - round(self.holdout * n)))

    @classmethod
    def for_run(cls, config: RunConfig, after: Mapping[str, Frozen] | None = None) -> UNetParams:
        """``quick`` (the defaults): 80 s on 2 CPU cores for 2048 images of 64 px; ``smoke``:
        seconds; ``paper``: a 4x wider net on 2x larger batches for 12x the steps (for a GPU;
        not measured).

        How settings are chosen: ``benchmarks/unet_settings.py`` fits each candidate on the
        training store minus its held-out last 1/8 (``holdout``) and ranks them by mIoU there;
        the evaluation split (where SCS targets come from) is printed beside it, never used.
        The numbers below predate that rule: they were scored on the evaluation split of the
        quick stores (2048 training and 512 evaluation images, seeds 0 and 1), trained on all
        2048 images; the defaults reached 60.3 % (63.8 % on the images dlib detected; 60.4 %
        / 64.0 % in the quick run of 2026-12-06). At 1800 steps of width 8: lr 2e-3 60.6 %, 3e-3 60.1 %,
        5e-3 59.5 %, 1e-3 59.5 %; class weights ** 0.25 beat plain cross-entropy (59.5 vs 57.4 %
        at lr 5e-3, mostly on eyebrows, eyes and mouth) and ** 0.5 (58.6 %); depth 4 did worse
        (56.3 %, plain cross-entropy). In the same time a wider net trains fewer steps and did
        worse: width 16 for 900 steps 56.2 %, width 8 at batch 32 for 900 steps 51.3 %.
        """
        profile = config.profile
        if profile == "smoke":
            return cls(steps=30, batch=8)
        if profile == "quick":
            return cls()
        return cls(steps=20000, batch=32, width=32)


def build_unet(n_class: int, params: UNetParams) -> SegmentationUNet:
    """A fresh UNet whose initial weights depend on ``params.seed`` alone."""
    torch.manual_seed(params.seed)
    return SegmentationUNet(n_class, width=params.width, depth=params.depth)


class ImageBatches:
    """Seeded batches over (images uint8 (N, H, W, 3), labels (N, H, W)) held in memory.

    Each epoch is a fresh permutation; batches run across epoch boundaries, so every image is
    seen once per epoch whatever the batch size. Images stay uint8 until drawn (a quarter of
    the float memory) and come out as float (B, 3, H, W) in [-1, 1] with int64 labels.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, seed: int = 0, flip: bool = False
    ) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[:3] != labels.shape:
            raise ValueError(
                f"need images (N, H, W, 3) and labels (N, H, W), got {images.shape} and "
                f"{labels.shape}"
            )
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(np.ascontiguousarray(labels))
        self.flip = flip
        self._rng = np.random.default_rng(seed)
        self._order = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def state(self) -> dict:
        """The sampler's position (its generator and the rest of the current epoch): plain
        ints and a tensor, so a partial fit saves it with ``torch.save`` and reloads it with
        ``weights_only=True``."""
        return {"rng": self._rng.bit_generator.state, "order": torch.from_numpy(self._order)}

    def set_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]
        self._order = state["order"].numpy().astype(np.int64)

    def next_batch(
        self, batch_size: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self._order) < batch_size:
            self._order = np.concatenate([self._order, self._rng.permutation(len(self))])
        take, self._order = self._order[:batch_size], self._order[batch_size:]
        idx = torch.from_numpy(take)
        x, y = self.images[idx], self.labels[idx]
        if self.flip:
            mirror = torch.from_numpy(self._rng.random(batch_size) < 0.5)
            x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
            y = torch.where(mirror[:, None, None], y.flip(-1), y)
        x = x.to(device).float() / 127.5 - 1.0
        return x, y.to(device).long()


def class_weights(labels: np.ndarray, n_class: int, power: float) -> torch.Tensor | None:
    """(median frequency / frequency) ** ``power`` per class, from the labels' pixel counts
    (None for ``power`` 0). mIoU weighs every class alike, while plain cross-entropy is
    dominated by skin and background pixels; a class with no pixel gets weight 1."""
    if power == 0:
        return None
    counts = np.bincount(labels.ravel(), minlength=256)[:n_class].astype(np.float64)
    present = counts > 0
    freq = counts / counts.sum()
    weights = np.ones(n_class)
    weights[present] = (np.median(freq[present]) / freq[present]) ** power
    return torch.tensor(weights, dtype=torch.float32)


class UNetTraining(FitMethod[FitResult]):
    """Train ``model`` in place on uint8 ``images`` (N, H, W, 3) and ``labels`` (N, H, W):
    pixel cross-entropy with Adam on seeded batches, lr ÷10 after ``lr_drop_at`` of the steps;
    the running loss is logged every 50 steps by default. bfloat16 autocast on CUDA, none on CPU
    (where the same seed gives the same weights).

    Its state (weights, Adam's state, the batch sampler's position) lets a resumed fit draw
    the batches an uninterrupted one would and end with its weights (a paper-size fit is hours
    on CPU).
    """

    desc = "unet"
    log_every = 50

    def __init__(
        self,
        model: SegmentationUNet,
        images: np.ndarray,
        labels: np.ndarray,
        params: UNetParams,
        device: torch.device,
    ) -> None:
        super().__init__()
        counts = np.bincount(labels.ravel(), minlength=256)
        unknown = np.flatnonzero(counts[model.n_class : IGNORE_LABEL])
        if unknown.size:
            raise LinearGanError(
                f"labels go up to {model.n_class + unknown[-1]} but the UNet has "
                f"{model.n_class} classes",
                "build the UNet with the store's number of classes",
            )
        self.model, self.params, self.device, self.seed = model, params, device, params.seed
        self.batches = ImageBatches(images, labels, seed=params.seed, flip=params.flip)
        weight = class_weights(labels, model.n_class, params.class_balance)
        self.weight = None if weight is None else weight.to(device)
        # channels-last: about 1.4x faster convolutions on CPU (oneDNN), still deterministic
        model.to(device, memory_format=torch.channels_last).train()
        self.opt = torch.optim.Adam(model.parameters(), lr=params.lr)
        self.drop = max(1, round(params.lr_drop_at * params.steps))
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        )
        self.total = params.steps
        self.running: float | None = None

    @property
    def loss(self) -> float:
        return float("nan") if self.running is None else self.running

    def step(self, iteration: int) -> float:
        if iteration == self.drop + 1:
            for group in self.opt.param_groups:
                group["lr"] *= 0.1
        x, y = self.batches.next_batch(self.params.batch, self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y, weight=self.weight, ignore_index=IGNORE_LABEL)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        value = loss.item()
        self.running = value if self.running is None else 0.98 * self.running + 0.02 * value
        return self.running

    def state_dict(self) -> dict:
        return {
            "running": self.running,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "sampler": self.batches.state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.batches.set_state(state["sampler"])
        self.running = state["running"]

    def finish(self, result: FitResult) -> FitResult:
        self.model.to(memory_format=torch.contiguous_format).eval()
        return result


def segmenter_iou(
    segmenter: Segmenter,
    chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    class_names: tuple[str, ...],
) -> dict[str, IoUResult]:
    """IoU (Appx A) of ``segmenter``'s labels against reference labels, over chunks of
    (uint8 images (B, H, W, 3), labels (B, H, W), mask or None): ``{"all": ..., "detected":
    ...}``, the second over the images the mask selects (the reference's own detections)."""
    acc = SubsetIoU(class_names)
    for images, labels, mask in chunks:
        acc.update(segmenter.segment(images).labels, labels, mask)
    return acc.results()

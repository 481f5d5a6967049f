"""Shared base and registry of semantic extractors (checkpoint files: ``storage.checkpoints``)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lineargan.errors import UnknownNameError

EXTRACTORS: dict[str, type[SemanticExtractor]] = {}


class SemanticExtractor(nn.Module):
    """Maps a GAN's feature maps to per-pixel class logits at a requested resolution.

    ``dims`` are the channel counts of the layers it reads, in generator order.
    """

    kind: str = ""

    def __init__(self, n_class: int, dims: list[int]) -> None:
        super().__init__()
        self.n_class = int(n_class)
        self.dims = [int(d) for d in dims]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            EXTRACTORS[cls.kind] = cls

    def init_args(self) -> dict:
        return {"n_class": self.n_class, "dims": self.dims}

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser parameter groups (one group at ``lr`` unless a subclass says otherwise)."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def forward(self, features: list[torch.Tensor], size: int) -> torch.Tensor:
        raise NotImplementedError

    def layer_logits(self, features: list[torch.Tensor], size: int) -> list[torch.Tensor]:
        """Per-layer contributions at ``size`` (only meaningful for additive extractors)."""
        raise NotImplementedError(f"{self.kind} has no per-layer decomposition")


class LayerView(nn.Module):
    """One layer of an additive extractor on its own (logits u↑(S_i)), so per-layer mIoU
    reuses the ordinary evaluation loop."""

    def __init__(self, model: SemanticExtractor, layer: int) -> None:
        super().__init__()
        self.model = model
        self.layer = int(layer)

    def forward(self, features: list[torch.Tensor], size: int) -> torch.Tensor:
        return self.model.layer_logits(features, size)[self.layer]


LayerWeighting = Literal["none", "softplus"]


class LayerWeights(nn.Module):
    """The authors' per-layer weights (their ``lw_type="softplus"``): S = Σ_i w_i·u↑(S_i) with
    w = softplus(a) / Σ softplus(a), a initialised to ones and trained at 10× the learning rate.

    Eq. 1 of the paper has no such weights (``"none"``, the default). For the LSE they change
    the parametrisation, not the function class (w_i·T_i is still a linear map), so a converged
    fit reaches the same optimum either way; the Adam schedule's trajectory differs.
    """

    lr_scale = 10.0

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        self.layer_weight = nn.Parameter(torch.ones(n_layers))

    def forward(self) -> torch.Tensor:
        w = F.softplus(self.layer_weight)
        return w / w.sum()


def split_param_groups(model: nn.Module, weights: LayerWeights | None, lr: float) -> list[dict]:
    """One group at ``lr``, plus the layer weights at ``LayerWeights.lr_scale``·lr."""
    if weights is None:
        return [{"params": list(model.parameters()), "lr": lr}]
    own = {id(p) for p in weights.parameters()}
    rest = [p for p in model.parameters() if id(p) not in own]
    return [
        {"params": rest, "lr": lr},
        {"params": list(weights.parameters()), "lr": LayerWeights.lr_scale * lr},
    ]


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's u↑: bilinear resize to the output resolution (identity when already there)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def build_extractor(kind: str, n_class: int, dims: list[int], **kwargs) -> SemanticExtractor:
    if kind not in EXTRACTORS:
        raise UnknownNameError("extractor", kind, list(EXTRACTORS))
    return EXTRACTORS[kind](n_class=n_class, dims=dims, **kwargs)

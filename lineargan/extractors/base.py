"""Shared base, registry and safetensors checkpointing for semantic extractors.

A checkpoint is a directory with ``config.json`` (class name, constructor arguments, code
version, plus any metadata the caller adds) and ``weights.safetensors``; loading rebuilds the
class from the config alone and never rewrites the files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from lineargan import __version__
from lineargan.errors import CheckpointError, UnknownNameError

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


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's u↑: bilinear resize to the output resolution (identity when already there)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def build_extractor(kind: str, n_class: int, dims: list[int], **kwargs) -> SemanticExtractor:
    if kind not in EXTRACTORS:
        raise UnknownNameError("extractor", kind, list(EXTRACTORS))
    return EXTRACTORS[kind](n_class=n_class, dims=dims, **kwargs)


def save_extractor(
    model: SemanticExtractor, directory: str | Path, metadata: dict | None = None
) -> None:
    """Write ``config.json`` + ``weights.safetensors`` atomically (temp names, then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "class_name": model.kind,
        "init_args": model.init_args(),
        "code_version": __version__,
        "metadata": metadata or {},
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, directory / "weights.safetensors.tmp")
    os.replace(directory / "weights.safetensors.tmp", directory / "weights.safetensors")
    # config.json last: its presence marks a finished checkpoint
    (directory / "config.json.tmp").write_text(json.dumps(config, indent=2, sort_keys=True))
    os.replace(directory / "config.json.tmp", directory / "config.json")


def load_extractor(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[SemanticExtractor, dict]:
    """Rebuild an extractor from its checkpoint directory; returns (model, metadata)."""
    directory = Path(directory)
    cfg_path, w_path = directory / "config.json", directory / "weights.safetensors"
    if not cfg_path.exists() or not w_path.exists():
        raise CheckpointError(
            f"{directory} is not a finished extractor checkpoint (config.json/weights.safetensors missing)",
            "refit it: the fit task rewrites unfinished checkpoints",
        )
    config = json.loads(cfg_path.read_text())
    model = build_extractor(config["class_name"], **config["init_args"])
    try:
        model.load_state_dict(load_file(w_path))
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights in {w_path} do not match {config['class_name']} {config['init_args']}",
            "delete that checkpoint directory and refit",
        ) from exc
    return model.to(device).eval(), config.get("metadata", {})

"""Model checkpoints on disk: a directory with ``config.json`` and ``weights.safetensors``.

Extractors and the baseline UNet are stored alike. ``config.json`` holds the class name,
constructor arguments, code version and any metadata the caller adds; loading rebuilds the
class from the config alone (extractors through their registry) and never rewrites the files.
``config.json`` is written last, so its presence marks a finished checkpoint and a killed fit
leaves nothing that looks finished.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lineargan import __version__
from lineargan.errors import CheckpointError
from lineargan.extractors import SemanticExtractor, build_extractor
from lineargan.models.unet import SegmentationUNet


def is_finished(directory: str | Path) -> bool:
    """True once a checkpoint's ``config.json`` (written last) exists."""
    return (Path(directory) / "config.json").exists()


def write_checkpoint(
    model: nn.Module, directory: str | Path, class_name: str, init_args: dict, metadata: dict
) -> None:
    """Write ``weights.safetensors``, then ``config.json`` (class, constructor arguments, code
    version, ``metadata``), each to a temporary name renamed into place: a kill at any point
    leaves either a finished checkpoint or none."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "class_name": class_name,
        "init_args": init_args,
        "code_version": __version__,
        "metadata": metadata,
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # per-process temporary names: two workers finishing the same fit never share a file
    tmp = f".{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    save_file(state, directory / f"weights.safetensors{tmp}")
    os.replace(directory / f"weights.safetensors{tmp}", directory / "weights.safetensors")
    # config.json last: its presence marks a finished checkpoint
    (directory / f"config.json{tmp}").write_text(json.dumps(config, indent=2, sort_keys=True))
    os.replace(directory / f"config.json{tmp}", directory / "config.json")


def read_config(directory: str | Path, kind: str) -> dict:
    """The ``config.json`` of a finished ``kind`` checkpoint (both files present)."""
    directory = Path(directory)
    files = (directory / "config.json", directory / "weights.safetensors")
    if not all(f.exists() for f in files):
        raise CheckpointError(
            f"{directory} is not a finished {kind} checkpoint "
            "(config.json/weights.safetensors missing)",
            "refit it: the fit task rewrites unfinished checkpoints",
        )
    return json.loads((directory / "config.json").read_text())


def load_weights(model: nn.Module, directory: str | Path, config: dict) -> None:
    """Load the checkpoint's weights into ``model`` (built from ``config``), refusing a
    mismatch with a one-line error instead of a partly loaded model."""
    w_path = Path(directory) / "weights.safetensors"
    try:
        model.load_state_dict(load_file(w_path))
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights in {w_path} do not match {config['class_name']} {config['init_args']}",
            "delete that checkpoint directory and refit",
        ) from exc


def save_extractor(
    model: SemanticExtractor, directory: str | Path, metadata: dict | None = None
) -> None:
    """Write ``config.json`` + ``weights.safetensors`` atomically (temp names, then rename)."""
    write_checkpoint(model, directory, model.kind, model.init_args(), metadata or {})


def load_extractor(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[SemanticExtractor, dict]:
    """Rebuild an extractor from its checkpoint directory; returns (model, metadata)."""
    config = read_config(directory, "extractor")
    model = build_extractor(config["class_name"], **config["init_args"])
    load_weights(model, directory, config)
    return model.to(device).eval(), config.get("metadata", {})


def save_unet(model: SegmentationUNet, directory: str | Path, metadata: dict | None = None) -> None:
    """Write the baseline UNet's checkpoint (same layout and atomicity as an extractor's)."""
    write_checkpoint(model, directory, type(model).__name__, model.init_args(), metadata or {})


def load_unet(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[SegmentationUNet, dict]:
    """Rebuild a :class:`SegmentationUNet` from its checkpoint; returns (model in eval mode,
    metadata)."""
    config = read_config(directory, "UNet")
    if config.get("class_name") != SegmentationUNet.__name__:
        raise CheckpointError(
            f"{directory} holds a {config.get('class_name')!r}, not a SegmentationUNet",
            "point at a baseline-unet checkpoint directory",
        )
    model = SegmentationUNet(**config["init_args"])
    load_weights(model, directory, config)
    return model.to(device).eval(), config.get("metadata", {})


class PartialFit:
    """A fit's state between saves, in ``<fit_dir>/partial/state.pt`` (a
    :class:`lineargan.training.FitCheckpoint`).

    Written to a temporary name and renamed, so a kill during a save leaves the previous state;
    read with ``torch.load(weights_only=True)`` (tensors, numbers, lists and dicts only). An
    unreadable state is reported and ignored: the fit starts over rather than resume from
    something it cannot trust. :meth:`clear` removes it once the final checkpoint is written.
    """

    def __init__(self, fit_dir: str | Path) -> None:
        self.directory = Path(fit_dir) / "partial"
        self.path = self.directory / "state.pt"

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "iteration" not in state:
                raise ValueError("not a partial-fit state")
            return state
        except Exception as exc:  # noqa: BLE001 - any unreadable file means: start over
            logging.getLogger(__name__).warning(
                "ignoring unreadable partial fit %s (%s); the fit starts over", self.path, exc
            )
            return None

    def save(self, state: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".pt.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

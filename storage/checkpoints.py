"""Extractor checkpoints on disk: a directory with ``config.json`` and ``weights.safetensors``.

``config.json`` holds the class name, constructor arguments, code version and any metadata the
caller adds; loading rebuilds the class from the config alone (through the extractor registry)
and never rewrites the files. ``config.json`` is written last, so its presence marks a finished
checkpoint and a killed fit leaves nothing that looks finished.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lineargan import __version__
from lineargan.errors import CheckpointError
from lineargan.extractors import SemanticExtractor, build_extractor


def is_finished(directory: str | Path) -> bool:
    """True once a checkpoint's ``config.json`` (written last) exists."""
    return (Path(directory) / "config.json").exists()


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
        tmp = self.path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

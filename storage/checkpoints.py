"""Model checkpoints: a directory (local path or fsspec URL) with ``config.json`` and ``weights.safetensors``.

Extractors and the baseline UNet are stored alike. ``config.json`` holds the class name,
constructor arguments, code version and any metadata the caller adds; loading rebuilds the
class from the config alone (extractors through their registry) and never rewrites the files.
``config.json`` is written last, so its presence marks a finished checkpoint and a killed fit
leaves nothing that looks finished. A fit may also keep snapshots of its weights during training
(:class:`FitSnapshots`, ``snapshots/iteration-<n>.safetensors``, Fig 8).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from lineargan import __version__
from lineargan.errors import CheckpointError
from lineargan.extractors import SemanticExtractor, build_extractor
from lineargan.models.unet import SegmentationUNet
from storage.target import Target

CONFIG = "config.json"
WEIGHTS = "weights.safetensors"


def _dir(directory: str | Path) -> Target:
    """A checkpoint directory given as local path or fsspec URL (``s3://…``)."""
    return Target(str(directory))


def is_finished(directory: str | Path) -> bool:
    """True once a checkpoint's ``config.json`` (written last) exists."""
    return (_dir(directory) / CONFIG).exists()


def write_checkpoint(
    model: nn.Module, directory: str | Path, class_name: str, init_args: dict, metadata: dict
) -> None:
    """Write ``weights.safetensors``, then ``config.json`` (class, constructor arguments, code
    version, ``metadata``), each atomically (see :meth:`Target.write_bytes_atomic`): a kill at
    any point leaves either a finished checkpoint or none. Both are serialised in memory first,
    so the same code writes to a local directory or an object store."""
    target = _dir(directory)
    config = {
        "class_name": class_name,
        "init_args": init_args,
        "code_version": __version__,
        "metadata": metadata,
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    (target / WEIGHTS).write_bytes_atomic(save_safetensors(state))
    # config.json last: its presence marks a finished checkpoint
    (target / CONFIG).write_bytes_atomic(json.dumps(config, indent=2, sort_keys=True).encode())


def read_config(directory: str | Path, kind: str) -> dict:
    """The ``config.json`` of a finished ``kind`` checkpoint (both files present)."""
    target = _dir(directory)
    if not all((target / name).exists() for name in (CONFIG, WEIGHTS)):
        raise CheckpointError(
            f"{directory} is not a finished {kind} checkpoint "
            "(config.json/weights.safetensors missing)",
            "refit it: the fit task rewrites unfinished checkpoints",
        )
    try:
        config = json.loads((target / CONFIG).read_bytes())
        if not isinstance(config, dict) or not isinstance(config.get("init_args"), dict):
            raise ValueError("no init_args object")
        str(config["class_name"])
    except (ValueError, KeyError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise CheckpointError(
            f"{(target / CONFIG).url} is not a readable {kind} checkpoint config ({exc})",
            "delete that checkpoint directory and refit (or copy it again if it was copied)",
        ) from None
    return config


def load_weights(
    model: nn.Module, directory: str | Path, config: dict, weights: Target | None = None
) -> None:
    """Load the checkpoint's weights (or another file of the same model, ``weights``) into
    ``model`` (built from ``config``), refusing a mismatch with a one-line error instead of a
    partly loaded model."""
    weights = weights or _dir(directory) / WEIGHTS
    try:
        state = load_safetensors(weights.read_bytes())
    except SafetensorError as exc:  # truncated or overwritten: not a safetensors file
        raise CheckpointError(
            f"{weights.url} is not a readable safetensors file ({exc})",
            "delete that checkpoint directory and refit (or copy it again if it was copied)",
        ) from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights in {weights.url} do not match {config['class_name']} {config['init_args']}",
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
    model = _extractor_of(directory, config)
    load_weights(model, directory, config)
    return model.to(device).eval(), config.get("metadata", {})


def _extractor_of(directory: str | Path, config: dict) -> SemanticExtractor:
    """The (untrained) extractor a checkpoint's config describes."""
    try:
        return build_extractor(config["class_name"], **config["init_args"])
    except TypeError as exc:  # init_args edited or from another code version
        raise CheckpointError(
            f"the config.json in {directory} does not describe a {config['class_name']} ({exc})",
            "delete that checkpoint directory and refit",
        ) from None


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
    :class:`lineargan.driver.FitCheckpoint`); ``fit_dir`` is a local path or an fsspec URL.

    Serialised in memory and written atomically, so a kill during a save leaves the previous
    state; read with ``torch.load(weights_only=True)`` (tensors, numbers, lists and dicts only).
    An unreadable state is reported and ignored: the fit starts over rather than resume from
    something it cannot trust. :meth:`clear` removes it once the final checkpoint is written.
    """

    def __init__(self, fit_dir: str | Path) -> None:
        self.target = _dir(fit_dir) / "partial"
        self.state = self.target / "state.pt"

    @property
    def directory(self) -> Path | str:
        """The ``partial`` directory: a :class:`Path` when local, its URL otherwise."""
        return Path(self.target.path) if self.target.is_local else self.target.url

    @property
    def path(self) -> Path | str:
        """The state file: a :class:`Path` when local, its URL otherwise."""
        return Path(self.state.path) if self.state.is_local else self.state.url

    def load(self) -> dict | None:
        if not self.state.exists():
            return None
        try:
            data = self.state.read_bytes()
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "iteration" not in state:
                raise ValueError("not a partial-fit state")
            return state
        except Exception as exc:  # noqa: BLE001 - any unreadable file means: start over
            logging.getLogger(__name__).warning(
                "ignoring unreadable partial fit %s (%s); the fit starts over", self.path, exc
            )
            return None

    def save(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        self.state.write_bytes_atomic(buf.getvalue())

    def clear(self) -> None:
        self.target.remove_tree()


class FitSnapshots:
    """A fit's weights at fixed steps of its training (a :class:`lineargan.driver.SnapshotSink`),
    in ``<fit_dir>/snapshots/iteration-<n>.safetensors``; ``fit_dir`` is a local path or an
    fsspec URL.

    Each is written atomically as soon as the step is taken, outside ``partial/``: a killed fit
    keeps the snapshots it took, its resumed run rewrites the later ones with the same weights,
    and clearing the partial state at the end leaves them. Loading builds the extractor from
    the finished checkpoint's config, so a snapshot is read like the checkpoint itself.
    """

    def __init__(self, fit_dir: str | Path) -> None:
        self.fit_dir = fit_dir
        self.target = _dir(fit_dir) / "snapshots"

    def _file(self, iteration: int) -> Target:
        return self.target / f"iteration-{iteration:08d}.safetensors"

    def save(self, iteration: int, weights: dict[str, torch.Tensor]) -> None:
        state = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
        self._file(iteration).write_bytes_atomic(save_safetensors(state))

    def has(self, iteration: int) -> bool:
        return self._file(iteration).exists()

    def load(self, iteration: int, device: str | torch.device = "cpu") -> SemanticExtractor:
        """The finished fit's extractor with the weights it had after step ``iteration``."""
        config = read_config(self.fit_dir, "extractor")
        model = _extractor_of(self.fit_dir, config)
        load_weights(model, self.fit_dir, config, self._file(iteration))
        return model.to(device).eval()

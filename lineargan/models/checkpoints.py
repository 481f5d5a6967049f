"""Reading user checkpoints safely: ``weights_only=True`` always, never unpickled code.

Researchers bring training checkpoints, not bare state dicts: genforce saves
``{"generator": ..., "generator_smooth": ..., "discriminator": ...}``, rosinality saves
``{"g": ..., "g_ema": ..., "latent_avg": ..., "args": argparse.Namespace(...)}``. The loader
reads them with ``weights_only=True``; the few harmless non-tensor classes such checkpoints
pickle (``argparse.Namespace``) are allow-listed, anything else is refused with a message that
says which global was found. NVIDIA's ``.pkl`` files pickle whole ``dnnlib`` networks, which can
only be read by running their code: they are refused with the conversion recipe.

Every generator family reads its checkpoint through :func:`read_generator_checkpoint`, so the
rules for finding the weights and naming them (the weights id keys the feature stores) are
written once.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lineargan.errors import CheckpointError

# Classes a training checkpoint may pickle besides tensors that carry no code to run.
SAFE_GLOBALS: tuple[Any, ...] = (argparse.Namespace,)

NVIDIA_PKL_HINT = (
    "NVIDIA .pkl files pickle code and are never unpickled here; convert once with the "
    "generator's own tools (StyleGAN2: rosinality/stylegan2-pytorch convert_weight.py, "
    "genforce/genforce converters/), then pass the resulting .pt/.pth"
)

# genforce's order of preference: the EMA weights (what its synthesize.py samples with), then
# the raw ones, then the file as a bare state dict.
GENFORCE_KEYS: tuple[str | None, ...] = ("generator_smooth", "generator", None)
# The authors' converted files (their ports) are bare state dicts; a genforce-style entry is
# accepted after that.
PORT_KEYS: tuple[str | None, ...] = (None, "generator_smooth", "generator")
# A buffer the authors' StyleGAN ports register (psi baked in per layer) but their converter
# drops from saved files: derived from the truncation options, so ignored when a file has it.
BAKED_TRUNCATION_KEY = "truncation.truncation"


# torch's legacy (pre-zip) format opens with this number pickled as a 10-byte LONG1.
_LEGACY_TORCH_MAGIC = b"\x8a\x0a" + torch.serialization.MAGIC_NUMBER.to_bytes(10, "little")
_PICKLE_PROTO = b"\x80"


def _file_kind(path: Path) -> str:
    """What ``path`` holds, judged from its bytes (never its name): ``torch`` (torch.save's zip
    archive, or its legacy format), ``nvidia`` (a plain pickle referencing NVIDIA's ``dnnlib``),
    ``pickle`` (any other plain pickle) or ``unknown``."""
    if zipfile.is_zipfile(path):
        return "torch"
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if _LEGACY_TORCH_MAGIC in head[:32]:
        return "torch"
    if b"dnnlib" in head:
        return "nvidia"
    return "pickle" if head.startswith(_PICKLE_PROTO) else "unknown"


def read_checkpoint(path: str | Path) -> Any:
    """The object saved in ``path``, loaded with ``weights_only=True`` on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", "pass an existing file")
    kind = _file_kind(path)
    if kind == "nvidia":
        raise CheckpointError(f"{path} is an NVIDIA network pickle", NVIDIA_PKL_HINT)
    if kind == "pickle":
        raise CheckpointError(
            f"checkpoint {path} is a plain pickle, neither a torch checkpoint nor an NVIDIA "
            "network pickle (plain pickles can run code, so they are never unpickled here)",
            "where you trust the file, load it and save its weights with "
            "torch.save(state_dict, 'weights.pt'), then pass that file",
        )
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names a refused global somewhere in a long message: keep only that; any other
        # unpickling failure is a file that is not a torch checkpoint at all
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise CheckpointError(
                f"checkpoint {path} cannot be read as a torch file (UnpicklingError)",
                "pass a torch checkpoint saved with torch.save",
            ) from exc
        raise CheckpointError(
            f"checkpoint {path} pickles objects that are not weights ({found.group(1)}); they "
            "could run code, so the file is not unpickled",
            "save only the network's state dict: torch.save(net.state_dict(), 'weights.pt')",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(
            f"checkpoint {path} cannot be read as a torch file ({type(exc).__name__})",
            "pass a torch checkpoint saved with torch.save",
        ) from exc


def is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def select_state_dict(
    obj: Any, keys: Sequence[str | None], source: str | Path, key: str | None = None
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The generator's state dict inside a checkpoint, and the entry it came from.

    ``key`` (the user's choice) wins; otherwise the first of ``keys`` present is used, in the
    adapter's order of preference (``None`` means the checkpoint *is* the state dict). So a
    genforce checkpoint gives ``generator_smooth`` (the EMA weights) before ``generator``.
    """
    candidates = [key] if key is not None else list(keys)
    for k in candidates:
        sub = obj if k is None else (obj.get(k) if isinstance(obj, Mapping) else None)
        if is_state_dict(sub):
            return dict(sub), k
    found = sorted(str(k) for k in obj) if isinstance(obj, Mapping) else [type(obj).__name__]
    wanted = [k for k in candidates if k is not None] or ["a bare state dict"]
    raise CheckpointError(
        f"checkpoint {source} has no generator state dict under {wanted} (it holds {found[:8]})",
        "pass checkpoint_key naming the entry with the generator's weights",
    )


def require_checkpoint(checkpoint: str | Path | None, kind: str, name: str, what: str) -> Path:
    """The checkpoint's path; the paper's models ship no weights, so none is a one-line error
    saying which option to set and what file it wants (``what``)."""
    if checkpoint is None:
        raise CheckpointError(
            f"{kind} {name!r} has no embedded weights and no checkpoint was given",
            f"set {kind}_checkpoint (or the checkpoint option) to {what}",
        )
    return Path(checkpoint)


def strip_data_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the ``module.`` prefix ``nn.DataParallel`` training adds to every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (checkpoints run to gigabytes).

    It lives here, not in :mod:`lineargan.models.weights` (which re-uses it), because the
    weights id of a checkpoint is computed here and ``weights`` already imports this module.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unnest_runner_checkpoint(obj: Any) -> Any:
    """The networks of a genforce *runner* checkpoint (nested under ``"models"``), else ``obj``.

    Model-zoo files hold ``{"generator": ...}`` at the top level; a training run's snapshots
    hold ``{"models": {"generator": ...}, "running_metadata": ...}``. A state dict that happens
    to have a ``models`` key maps it to a tensor, not a mapping, so it is left alone.
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("models"), Mapping):
        return obj["models"]
    return obj


@dataclass(frozen=True, eq=False)
class GeneratorCheckpoint:
    """A generator's weights as read from a user's checkpoint, and the id they are stored under.

    ``contents`` is the whole object the file holds (before any unnesting), for adapters that
    read more than the weights from it (rosinality's ``latent_avg``).
    """

    state: dict[str, torch.Tensor] = field(repr=False)
    path: Path
    weights_id: str
    contents: Any = field(repr=False)

    @property
    def source(self) -> str:
        """The path as error messages and ``load_into`` name it."""
        return str(self.path)


def read_generator_checkpoint(
    checkpoint: str | Path | None,
    *,
    generator: str,
    what: str,
    keys: Sequence[str | None],
    checkpoint_key: str | None = None,
) -> GeneratorCheckpoint:
    """Read the generator ``generator``'s weights from ``checkpoint``, as every family does.

    ``what`` says which file to pass when none was; ``keys`` is the family's order of
    preference for the entry holding the state dict (``checkpoint_key``, the user's choice,
    wins). The weights id is the file's sha256, suffixed ``:<checkpoint_key>`` when the user
    picked an entry, so the ``generator`` and ``generator_smooth`` weights of one file never
    share a feature store.
    """
    path = require_checkpoint(checkpoint, "generator", generator, what)
    contents = read_checkpoint(path)
    state, _ = select_state_dict(unnest_runner_checkpoint(contents), keys, path, checkpoint_key)
    sha = sha256_file(path)
    weights_id = sha if checkpoint_key is None else f"{sha}:{checkpoint_key}"
    return GeneratorCheckpoint(state=state, path=path, weights_id=weights_id, contents=contents)

"""Reading user checkpoints safely: ``weights_only=True`` always, never unpickled code.

Researchers bring training checkpoints, not bare state dicts: genforce saves
``{"generator": ..., "generator_smooth": ..., "discriminator": ...}``, rosinality saves
``{"g": ..., "g_ema": ..., "latent_avg": ..., "args": argparse.Namespace(...)}``. The loader
reads them with ``weights_only=True``; the few harmless non-tensor classes such checkpoints
pickle (``argparse.Namespace``) are allow-listed, anything else is refused with a message that
says which global was found. NVIDIA's ``.pkl`` files pickle whole ``dnnlib`` networks, which can
only be read by running their code: they are refused with the conversion recipe.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
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


def _is_network_pickle(path: Path) -> bool:
    """True for a plain pickle that references NVIDIA's ``dnnlib`` (torch saves zip files)."""
    if zipfile.is_zipfile(path):
        return False
    with open(path, "rb") as fh:
        return b"dnnlib" in fh.read(1 << 16)


def read_checkpoint(path: str | Path) -> Any:
    """The object saved in ``path``, loaded with ``weights_only=True`` on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", "pass an existing file")
    if path.suffix == ".pkl" or _is_network_pickle(path):
        raise CheckpointError(f"{path} is an NVIDIA network pickle", NVIDIA_PKL_HINT)
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
            f"checkpoint {path} pickles objects that are not weights ({found.group(1)})",
            "save only the generator's state dict: torch.save(G.state_dict(), 'g.pt')",
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

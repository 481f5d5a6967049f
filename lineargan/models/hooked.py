"""Any ``torch.nn.Module`` as a generator: feature maps are read by forward hooks.

A researcher with a generator we have no adapter for (another GAN family, a diffusion UNet)
should not have to write a :class:`GeneratorAdapter`; at most one small function. Options of
``torch-hooks`` (JSON in ``generator_options``, or a YAML file named by ``spec`` with the same
keys; explicit options override the file's, dict options merge key by key, and relative paths
in the file are relative to it)::

    builder: my_nets.py:make_generator   # or package.module:callable; returns the nn.Module
    builder_kwargs: {size: 256}
    checkpoint: g.pt                      # torch file; state dict bare or under checkpoint_key
    layers: [synthesis.b4, synthesis.b8]  # named_modules() names, in feature order
    tuple_index: {synthesis.b4: 0}        # or one int/str for all; default: first tensor
    latent_shape: [512]                   # latents are flattened to prod(latent_shape)
    resolution: 256                       # optional: inferred from one pass when absent
    call: module                          # module(latents) | denoiser | pkg.mod:fn(module, z)
    call_kwargs: {}                       # extra keyword arguments of that call
    image_range: [-1, 1]                  # what the output image spans, mapped to [-1, 1]
    random_init: false                    # true (with seed) instead of a checkpoint: plumbing

``call: denoiser`` (+ ``timestep``, ``prediction``, ``noise_schedule``, ``num_timesteps``) runs
a diffusion UNet at one timestep (:class:`DenoiserCall`): the latents are x_t, drawn standard
normal like any latent (x_t's marginal only near t = T; pick large timesteps, or a ``call``
function that noises images itself). Feature maps must be 4-D; :meth:`forward_features` stops
the pass once its last needed module has run. ``weights_sha256`` hashes the checkpoint file
*and* every option that changes outputs (a builder or call given as a file by its content), so
two specs never share a store.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.checkpoints import read_checkpoint, select_state_dict, strip_data_parallel
from lineargan.models.hooked_calls import (  # noqa: F401 - alpha_bar is part of the API
    DenoiserCall,
    FunctionCall,
    alpha_bar,
    select_output,
)
from lineargan.models.hooked_spec import HookSpec, Index, close_matches, merge_options, resolve_ref
from lineargan.models.protocols import (
    GeneratorAdapter,
    GeneratorOutput,
    LatentWeights,
    latent_matrix,
)
from lineargan.models.registry import register_generator
from lineargan.models.weights import load_into, sha256_file

# Where a training checkpoint keeps the weights, in order of preference: a bare state dict,
# then the EMA copies (what GANs and diffusion models sample with), then the raw ones.
STATE_DICT_KEYS: tuple[str | None, ...] = (
    None,
    "ema",
    "g_ema",
    "generator_smooth",
    "state_dict",
    "model",
    "model_state_dict",
    "generator",
    "netG_state_dict",
)


class _StopForward(BaseException):  # noqa: N818 - a signal, not an error
    """Raised by the last needed hook to abandon the rest of the forward pass. A
    BaseException so a user module's ``except Exception`` cannot swallow it."""


@dataclass
class _Capture:
    """One forward pass's hooked outputs; thread-local, because a worker's cached generator
    may run on several threads at once and the hooks are shared."""

    owner: HookedGenerator
    wanted: frozenset[str]
    stop_early: bool
    maps: dict[str, torch.Tensor] = field(default_factory=dict)


_LOCAL = threading.local()


class HookedGenerator(GeneratorAdapter):
    """``net`` wrapped so its hooked modules' outputs are the feature maps."""

    name = "torch-hooks"

    def __init__(
        self,
        net: nn.Module,
        opts: HookSpec,
        call: Callable[[nn.Module, torch.Tensor], Any],
        weights_sha256: str,
    ) -> None:
        super().__init__()
        self.net = net
        self.opts = opts
        self.call = call
        self.latent_shape = tuple(opts.latent_shape or ())
        self.latent_dim = math.prod(self.latent_shape)
        self.latent_space = "x_t" if opts.call == "denoiser" else "z"
        self.layer_names = tuple(opts.layers)
        self.resolution = opts.resolution or 0
        self.weights_sha256 = weights_sha256
        modules = dict(net.named_modules())
        for name in self.layer_names:
            if name not in modules:
                raise LinearGanError(
                    f"module {name!r} is not in {type(net).__name__} ({close_matches(name, list(modules))})",
                    "name layers as net.named_modules() does",
                )
            # registered once: per-call hooks would leak into other threads' passes
            modules[name].register_forward_hook(functools.partial(self._on_output, name))

    def _index(self, name: str) -> Index | None:
        ti = self.opts.tuple_index
        return ti.get(name) if isinstance(ti, dict) else ti

    def _on_output(self, name: str, module: nn.Module, args: Any, output: Any) -> None:
        cap: _Capture | None = getattr(_LOCAL, "capture", None)
        if cap is None or cap.owner is not self or name not in cap.wanted:
            return
        if name in cap.maps:
            raise LinearGanError(
                f"module {name!r} ran more than once in one forward pass",
                "hook a module that runs once per pass (e.g. its parent block, not a shared "
                "activation)",
            )
        x = select_output(output, self._index(name), name)
        if x.ndim != 4:
            raise LinearGanError(
                f"module {name!r} gives a feature of shape {tuple(x.shape)}, not (B, c, h, w)",
                "hook a module whose output is a 4-D feature map, or pick one with tuple_index",
            )
        # a copy: a later in-place op (ReLU(inplace=True)) would otherwise rewrite it
        cap.maps[name] = x.clone()
        if cap.stop_early and len(cap.maps) == len(cap.wanted):
            raise _StopForward

    @contextmanager
    def _capturing(self, wanted: Sequence[str], stop_early: bool) -> Iterator[_Capture]:
        previous = getattr(_LOCAL, "capture", None)
        cap = _Capture(self, frozenset(wanted), stop_early)
        _LOCAL.capture = cap
        try:
            yield cap
        finally:
            _LOCAL.capture = previous

    def _run(self, latents: torch.Tensor) -> torch.Tensor:
        """The image for (B, latent_dim) latents, reshaped to ``latent_shape`` for the call."""
        x = latents.reshape(len(latents), *self.latent_shape)
        image = select_output(self.call(self.net, x), None, "<output>")
        lo, hi = self.opts.image_range
        if (lo, hi) != (-1.0, 1.0):
            image = (image - lo) * (2.0 / (hi - lo)) - 1.0
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[2] != image.shape[3]:
            raise LinearGanError(
                f"the module's image has shape {tuple(image.shape)}, not (B, 3, H, H)",
                "pass call: 'package.module:function' returning the RGB image",
            )
        if self.resolution and image.shape[-1] != self.resolution:
            raise LinearGanError(
                f"the module's image is {image.shape[-1]} px, resolution says {self.resolution}",
                f"set resolution to {image.shape[-1]} or drop it to infer it",
            )
        return image

    def _gathered(self, cap: _Capture, names: Sequence[str]) -> list[torch.Tensor]:
        missing = [n for n in names if n not in cap.maps]
        if missing:
            raise LinearGanError(
                f"modules {missing} did not run during the forward pass",
                "hook modules the generator's forward actually calls",
            )
        return [cap.maps[n] for n in names]

    def forward(self, latents: torch.Tensor) -> GeneratorOutput:
        with self._capturing(self.layer_names, stop_early=False) as cap:
            image = self._run(latents)
        return GeneratorOutput(image=image, features=self._gathered(cap, self.layer_names))

    def forward_features(
        self, latents: torch.Tensor, layers: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Only the wanted maps: the pass stops once all of them exist (no image)."""
        idx = range(len(self.layer_names)) if layers is None else layers
        names = [self.layer_names[i] for i in idx]
        with self._capturing(names, stop_early=True) as cap, suppress(_StopForward):
            self._run(latents)
        return self._gathered(cap, names)

    def latent_weights(self, module: str | None = None) -> LatentWeights:
        """The weight of ``module`` (named as ``net.named_modules()`` does), which must be a
        linear map whose input is the whole latent."""
        modules = dict(self.net.named_modules())
        if module is None or module not in modules:
            known = (
                close_matches(module, list(modules)) if module else f"known: {list(modules)[:12]}"
            )
            raise LinearGanError(
                f"torch-hooks needs the module whose input is the latent, got {module!r} ({known})",
                "name it (sefa.module=...) as net.named_modules() does",
            )
        matrix = latent_matrix(modules[module])
        if matrix.shape[1] != self.latent_dim:
            raise LinearGanError(
                f"module {module!r} reads {matrix.shape[1]} inputs, the latent has {self.latent_dim}",
                "name the module whose input is the whole latent",
            )
        return LatentWeights((matrix,))

    @torch.no_grad()
    def layer_shapes(self) -> list[tuple[int, int, int]]:
        device = next(iter(self.parameters()), torch.zeros(0)).device
        feats = self.forward_features(torch.zeros(1, self.latent_dim, device=device))
        return [tuple(int(s) for s in f.shape[1:]) for f in feats]  # type: ignore[misc]


# -- building -------------------------------------------------------------------------------


def _make_call(opts: HookSpec) -> tuple[Callable[[nn.Module, torch.Tensor], Any], str]:
    if opts.call == "module":
        return FunctionCall(None, opts.call_kwargs), "module"
    if opts.call == "denoiser":
        assert opts.timestep is not None and opts.num_timesteps is not None
        ab = alpha_bar(opts.noise_schedule or "linear", opts.num_timesteps, opts.timestep)
        return DenoiserCall(opts.timestep, opts.prediction or "epsilon", ab, opts.call_kwargs), (
            "denoiser"
        )
    fn, identity = resolve_ref(opts.call, "call")
    return FunctionCall(fn, opts.call_kwargs), identity


def build_hooked(opts: HookSpec) -> HookedGenerator:
    """Build, load and wrap the module ``opts`` describe; infer the resolution if not given."""
    builder, builder_id = resolve_ref(opts.builder, "builder")
    call, call_id = _make_call(opts)
    with torch.random.fork_rng(devices=[]):  # seeded build that leaves the caller's RNG alone
        torch.manual_seed(opts.seed)
        try:
            net = builder(**opts.builder_kwargs)
        except TypeError as exc:
            raise LinearGanError(
                f"builder {opts.builder!r} refused builder_kwargs ({exc})".replace("\n", " "),
                "pass the keyword arguments it takes in builder_kwargs",
            ) from None
    if not isinstance(net, nn.Module):
        raise LinearGanError(
            f"builder {opts.builder!r} returned a {type(net).__name__}, not a torch.nn.Module",
            "make it return the generator module",
        )
    if opts.checkpoint is not None:
        path = Path(opts.checkpoint).expanduser()
        obj = read_checkpoint(path)
        state, _ = select_state_dict(obj, STATE_DICT_KEYS, path, opts.checkpoint_key)
        own_prefixed = any(k.startswith("module.") for k in net.state_dict())
        load_into(net, state if own_prefixed else strip_data_parallel(state), str(path))
        weights = f"sha256:{sha256_file(path)}"
    elif opts.random_init:
        weights = f"random-init-seed{opts.seed}"
    else:
        raise CheckpointError(
            "generator 'torch-hooks' has no weights",
            "pass checkpoint (a torch file with the module's state dict), or random_init: true "
            "for a seeded random module",
        )
    payload = opts.model_dump(mode="json", exclude={"checkpoint"})
    payload.update(builder=builder_id, call=call_id, weights=weights)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    model = HookedGenerator(net, opts, call, digest).eval()
    if not model.resolution:
        with torch.no_grad():  # one pass on a zero latent: the image's size is the resolution
            model.resolution = int(model(torch.zeros(1, model.latent_dim)).image.shape[-1])
    return model


@register_generator("torch-hooks")
def torch_hooks(
    checkpoint: str | Path | None = None,
    spec: str | Path | None = None,
    builder: str | None = None,
    builder_kwargs: dict[str, Any] | None = None,
    checkpoint_key: str | None = None,
    layers: list[str] | None = None,
    tuple_index: Index | dict[str, Index] | None = None,
    latent_shape: list[int] | None = None,
    resolution: int | None = None,
    call: str | None = None,
    call_kwargs: dict[str, Any] | None = None,
    timestep: int | None = None,
    prediction: str | None = None,
    noise_schedule: str | None = None,
    num_timesteps: int | None = None,
    image_range: list[float] | None = None,
    random_init: bool | None = None,
    seed: int | None = None,
) -> HookedGenerator:
    """Any torch module as a generator; see the module docstring for the options.

    ``spec`` names a YAML file with the same options; options given here override it.
    """
    explicit = {
        "checkpoint": checkpoint,
        "builder": builder,
        "builder_kwargs": builder_kwargs,
        "checkpoint_key": checkpoint_key,
        "layers": layers,
        "tuple_index": tuple_index,
        "latent_shape": latent_shape,
        "resolution": resolution,
        "call": call,
        "call_kwargs": call_kwargs,
        "timestep": timestep,
        "prediction": prediction,
        "noise_schedule": noise_schedule,
        "num_timesteps": num_timesteps,
        "image_range": image_range,
        "random_init": random_init,
        "seed": seed,
    }
    return build_hooked(merge_options(spec, explicit))

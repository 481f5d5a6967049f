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

import dataclasses
import difflib
import functools
import hashlib
import importlib
import importlib.util
import json
import math
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError
from torch import nn

from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.checkpoints import read_checkpoint, select_state_dict
from lineargan.models.protocols import GeneratorAdapter, GeneratorOutput
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
CALL_MODES = ("module", "denoiser")
Index = int | str


class HookSpec(BaseModel):
    """The effective options of one hooked generator (file and explicit ones merged)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    builder: str
    builder_kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_key: str | None = None
    layers: list[str] = Field(min_length=1)
    tuple_index: Index | dict[str, Index] | None = None
    latent_shape: list[PositiveInt] | None = None
    resolution: PositiveInt | None = None
    call: str = "module"
    call_kwargs: dict[str, Any] = Field(default_factory=dict)
    timestep: int | None = Field(None, ge=0)
    prediction: Literal["epsilon", "sample", "v"] | None = None
    noise_schedule: Literal["linear", "cosine"] | None = None
    num_timesteps: PositiveInt | None = None
    image_range: tuple[float, float] = (-1.0, 1.0)
    random_init: bool = False
    seed: int = 0


OPTION_NAMES: tuple[str, ...] = tuple(HookSpec.model_fields)
DENOISER_ONLY = ("timestep", "prediction", "noise_schedule", "num_timesteps")


# -- options: YAML file + explicit, validated ----------------------------------------------


def _close(name: str, known: Sequence[str]) -> str:
    near = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    return f"did you mean {near}?" if near else f"known: {list(known)[:12]}"


def _is_path_ref(ref: str) -> bool:
    target = ref.rpartition(":")[0]
    return target.endswith(".py") or "/" in target or "\\" in target


def _rebase(path: str, base: Path) -> str:
    """A path written in a YAML file, taken relative to that file (as users expect)."""
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The options in a YAML spec file, with its relative paths made relative to the file."""
    import yaml  # a Prefect dependency; imported here so the science layer stays light

    path = Path(path).expanduser()
    if not path.is_file():
        raise LinearGanError(f"generator spec {path} does not exist", "pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise LinearGanError(
            f"generator spec {path} is not valid YAML{line}", "fix the YAML syntax"
        ) from None
    if not isinstance(data, dict):
        raise LinearGanError(
            f"generator spec {path} holds a {type(data).__name__}, not a mapping of options",
            f"write one 'option: value' per line, options among {list(OPTION_NAMES)}",
        )
    for key in data:
        if key not in OPTION_NAMES:
            raise LinearGanError(
                f"generator spec {path} has unknown option {key!r} ({_close(str(key), OPTION_NAMES)})",
                f"use options among {list(OPTION_NAMES)}",
            )
    base = path.resolve().parent
    if isinstance(data.get("checkpoint"), str):
        data["checkpoint"] = _rebase(data["checkpoint"], base)
    for key in ("builder", "call"):
        if isinstance(data.get(key), str) and _is_path_ref(data[key]):
            target, _, attr = data[key].rpartition(":")
            data[key] = f"{_rebase(target, base)}:{attr}"
    return data


def merge_options(spec: str | Path | None, explicit: Mapping[str, Any]) -> HookSpec:
    """The spec file's options overridden by the explicit ones (None = not given), validated."""
    merged = read_spec_file(spec) if spec is not None else {}
    for key, value in explicit.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}  # e.g. one builder kwarg from the CLI
        else:
            merged[key] = value
    if isinstance(merged.get("checkpoint"), Path):
        merged["checkpoint"] = str(merged["checkpoint"])
    for key, example in (("builder", "'my_pkg.nets:make_generator'"), ("layers", "['block1']")):
        if key not in merged:
            raise LinearGanError(
                f"generator 'torch-hooks' needs option {key!r}",
                f"pass {key} (e.g. {example}) in generator_options or the spec YAML",
            )
    try:
        opts = HookSpec(**merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise LinearGanError(
            f"generator option {loc!r} is invalid: {first['msg']} (got {first.get('input')!r})",
            "correct it in generator_options or the spec YAML",
        ) from None
    return _check_semantics(opts)


def _check_semantics(opts: HookSpec) -> HookSpec:
    """Rules between options; the denoiser's defaults filled so the hash sees them."""
    if len(set(opts.layers)) != len(opts.layers):
        dup = sorted({n for n in opts.layers if opts.layers.count(n) > 1})
        raise LinearGanError(f"layers {dup} are listed twice", "list each module name once")
    if isinstance(opts.tuple_index, dict):
        stray = sorted(set(opts.tuple_index) - set(opts.layers))
        if stray:
            raise LinearGanError(
                f"tuple_index names modules {stray} that are not in layers",
                "key tuple_index by names listed in layers",
            )
    if opts.call not in CALL_MODES and ":" not in opts.call:
        raise LinearGanError(
            f"call {opts.call!r} is neither a mode nor a function reference",
            f"use one of {list(CALL_MODES)} or 'package.module:function'",
        )
    lo, hi = opts.image_range
    if not lo < hi:
        raise LinearGanError(f"image_range {[lo, hi]} is empty", "pass [low, high], e.g. [0, 1]")
    if opts.checkpoint is not None and opts.random_init:
        raise LinearGanError(
            "both checkpoint and random_init are given", "drop random_init to load the checkpoint"
        )
    if opts.call != "denoiser":
        given = [k for k in DENOISER_ONLY if getattr(opts, k) is not None]
        if given:
            raise LinearGanError(
                f"options {given} apply only to call: denoiser (call is {opts.call!r})",
                "set call to 'denoiser' or drop them",
            )
        if opts.latent_shape is None:
            raise LinearGanError(
                "generator 'torch-hooks' needs latent_shape",
                "pass the shape one latent has when the module is called, e.g. [512] or [4, 16, 16]",
            )
        return opts
    if opts.timestep is None:
        raise LinearGanError(
            "call: denoiser needs a timestep", "pass timestep, e.g. 500 of 1000 training steps"
        )
    update: dict[str, Any] = {
        "prediction": opts.prediction or "epsilon",
        "noise_schedule": opts.noise_schedule or "linear",
        "num_timesteps": opts.num_timesteps or 1000,
    }
    if opts.timestep >= update["num_timesteps"]:
        raise LinearGanError(
            f"timestep {opts.timestep} is not below num_timesteps {update['num_timesteps']}",
            "pass a timestep in [0, num_timesteps)",
        )
    if opts.latent_shape is None:
        if opts.resolution is None:
            raise LinearGanError(
                "call: denoiser needs latent_shape or resolution",
                "pass resolution (x_t is then [3, resolution, resolution]) or latent_shape",
            )
        update["latent_shape"] = [3, opts.resolution, opts.resolution]
    return opts.model_copy(update=update)


# -- code references: "package.module:attr" or "file.py:attr" ------------------------------


def _load_file_module(path: Path) -> Any:
    """Import a user's ``.py`` file by path, once per content (its name carries the hash)."""
    if not path.is_file():
        raise LinearGanError(f"file {path} does not exist", "pass an existing .py file")
    name = f"_lineargan_hooks_{sha256_file(path)[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return module


def resolve_ref(ref: str, option: str) -> tuple[Callable[..., Any], str]:
    """The callable ``ref`` names, and its identity for the weights hash.

    A file reference is identified by its content's hash rather than its path, so moving a
    project keeps its stores valid while editing the user's function invalidates them.
    """
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise LinearGanError(
            f"{option} {ref!r} is not a 'module:attribute' reference",
            f"write {option} as 'package.module:function' or 'path/to/file.py:function'",
        )
    try:
        if _is_path_ref(ref):
            path = Path(target).expanduser()
            module, identity = _load_file_module(path), f"sha256:{sha256_file(path)}:{attr}"
        else:
            module, identity = importlib.import_module(target), ref
        obj = functools.reduce(getattr, attr.split("."), module)
    except LinearGanError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code may raise anything on import
        raise LinearGanError(
            f"{option} {ref!r} cannot be loaded ({type(exc).__name__}: {exc})".replace("\n", " "),
            "make the module importable (installed or on PYTHONPATH) or reference its file "
            "as 'path/to/file.py:function'",
        ) from None
    if not callable(obj):
        raise LinearGanError(f"{option} {ref!r} is not callable", "reference a function or class")
    return obj, identity


# -- outputs: containers → one tensor -------------------------------------------------------


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
    dropped. x_0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t, clamped to [-1, 1] as samplers do, is what the
    segmenter labels: the model's raw output (noise) has no semantics to label.
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
        return x0.clamp(-1, 1)


# -- the adapter ----------------------------------------------------------------------------


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
                    f"module {name!r} is not in {type(net).__name__} ({_close(name, list(modules))})",
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

    @torch.no_grad()
    def layer_shapes(self) -> list[tuple[int, int, int]]:
        device = next(iter(self.parameters()), torch.zeros(0)).device
        feats = self.forward_features(torch.zeros(1, self.latent_dim, device=device))
        return [tuple(int(s) for s in f.shape[1:]) for f in feats]  # type: ignore[misc]


# -- building -------------------------------------------------------------------------------


def _strip_data_parallel(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix ``nn.DataParallel`` checkpoints carry, when the net has none."""
    own = net.state_dict()
    if (
        state
        and all(k.startswith("module.") for k in state)
        and not any(k.startswith("module.") for k in own)
    ):
        return {k.removeprefix("module."): v for k, v in state.items()}
    return state


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
        load_into(net, _strip_data_parallel(state, net), str(path))
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

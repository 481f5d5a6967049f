"""The options of the ``torch-hooks`` generator: validated, merged from a YAML file, and
resolved to the user's callables (see :mod:`lineargan.models.hooked` for the keys)."""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from lineargan.errors import LinearGanError
from lineargan.models.weights import sha256_file

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


def close_matches(name: str, known: Sequence[str]) -> str:
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
                f"generator spec {path} has unknown option {key!r} ({close_matches(str(key), OPTION_NAMES)})",
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

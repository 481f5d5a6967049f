"""Name → factory registries for generators and segmenters.

Factories are registered by decorators in their own modules; the built-in modules are
imported lazily on first lookup so importing the registry stays cheap.
"""

from __future__ import annotations

import importlib
import inspect
import json
import typing
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from lineargan.device import resolve_device
from lineargan.errors import LinearGanError, UnknownNameError
from lineargan.models.protocols import DifferentiableSegmenter, GeneratorAdapter, Segmenter

_BUILTIN_MODULES = (
    "lineargan.models.dcgan_digiface",
    "lineargan.models.dlib_face",
    "lineargan.models.pggan_genforce",
    "lineargan.models.pggan_lineargan",
    "lineargan.models.stylegan_genforce",
    "lineargan.models.stylegan_lineargan",
    "lineargan.models.face_parser",
    "lineargan.models.deeplab_ade20k",
    "lineargan.models.stylegan2_genforce",
    "lineargan.models.stylegan2_lineargan",
    "lineargan.models.stylegan2_rosinality",
    "lineargan.models.hooked",
)

GENERATORS: dict[str, Callable[..., GeneratorAdapter]] = {}
SEGMENTERS: dict[str, Callable[..., Segmenter]] = {}

F = TypeVar("F", bound=Callable)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def register_generator(name: str) -> Callable[[F], F]:
    """Register a generator factory under ``name``."""

    def deco(factory: F) -> F:
        GENERATORS[name] = factory
        return factory

    return deco


def register_segmenter(name: str) -> Callable[[F], F]:
    """Register a segmenter factory under ``name``."""

    def deco(factory: F) -> F:
        SEGMENTERS[name] = factory
        return factory

    return deco


def list_generators() -> list[str]:
    _load_builtins()
    return sorted(GENERATORS)


def list_segmenters() -> list[str]:
    _load_builtins()
    return sorted(SEGMENTERS)


def _factory(kind: str, table: dict[str, Callable], name: str, options: dict[str, Any]) -> Callable:
    """The factory for ``name`` after checking ``options`` against its signature, so a typo
    in an option is a one-line error before any weights are read."""
    _load_builtins()
    if name not in table:
        raise UnknownNameError(kind, name, list(table))
    factory = table[name]
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(factory).parameters if not p.startswith("_")]
        raise LinearGanError(
            f"{kind} {name!r} does not take options {sorted(options)} ({exc})",
            f"use options among {accepted}",
        ) from None
    return factory


def check_generator_options(name: str, options: dict[str, Any]) -> None:
    """Raise a one-line error unless generator ``name`` accepts ``options``."""
    _factory("generator", GENERATORS, name, options)


def check_segmenter_options(name: str, options: dict[str, Any]) -> None:
    """Raise a one-line error unless segmenter ``name`` accepts ``options``."""
    _factory("segmenter", SEGMENTERS, name, options)


def segmenter_is_differentiable(name: str) -> bool:
    """Whether segmenter ``name`` builds a :class:`DifferentiableSegmenter` (pixel logits with
    gradients to the image), read from its factory's return annotation (or the class it
    registers) without loading any weights: the run's parameters are resolved before any model
    is. A factory that does not say what it returns counts as not differentiable."""
    _load_builtins()
    if name not in SEGMENTERS:
        raise UnknownNameError("segmenter", name, list(SEGMENTERS))
    factory = SEGMENTERS[name]
    if inspect.isclass(factory):
        return issubclass(factory, DifferentiableSegmenter)
    try:
        returned = typing.get_type_hints(factory).get("return")
    except (NameError, TypeError):  # an annotation that does not resolve says nothing
        return False
    return inspect.isclass(returned) and issubclass(returned, DifferentiableSegmenter)


def get_generator(name: str, **kwargs: Any) -> GeneratorAdapter:
    """Build the generator registered as ``name`` (weights loaded, eval mode)."""
    return _factory("generator", GENERATORS, name, kwargs)(**kwargs).eval()


def get_segmenter(name: str, **kwargs: Any) -> Segmenter:
    """Build the segmenter registered as ``name``."""
    return _factory("segmenter", SEGMENTERS, name, kwargs)(**kwargs)


def model_kwargs(checkpoint: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The factory keyword arguments of a model: its options, plus ``checkpoint`` when set."""
    return {**options, "checkpoint": checkpoint} if checkpoint else dict(options)


@lru_cache(maxsize=4)
def cached_generator(
    name: str, device: str = "cpu", checkpoint: str | None = None, options: str = "{}"
) -> GeneratorAdapter:
    """Generator ``name`` loaded once per process (mapped tasks reuse it chunk after chunk);
    ``options`` is canonical JSON (``config.options_json``) so the call is hashable."""
    kwargs = model_kwargs(checkpoint, json.loads(options))
    return get_generator(name, **kwargs).to(resolve_device(device))


@lru_cache(maxsize=4)
def cached_segmenter(name: str, checkpoint: str | None = None, options: str = "{}") -> Segmenter:
    """Segmenter ``name`` loaded once per process."""
    return get_segmenter(name, **model_kwargs(checkpoint, json.loads(options)))

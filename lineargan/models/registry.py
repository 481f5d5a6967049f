"""Name → factory registries for generators and segmenters.

Factories are registered by decorators in their own modules; the built-in modules are
imported lazily on first lookup so importing the registry stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

from lineargan.errors import UnknownNameError
from lineargan.models.protocols import GeneratorAdapter, Segmenter

_BUILTIN_MODULES = (
    "lineargan.models.dcgan_digiface",
    "lineargan.models.dlib_face",
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


def get_generator(name: str, **kwargs) -> GeneratorAdapter:
    """Build the generator registered as ``name`` (weights loaded, eval mode)."""
    _load_builtins()
    if name not in GENERATORS:
        raise UnknownNameError("generator", name, list(GENERATORS))
    return GENERATORS[name](**kwargs).eval()


def get_segmenter(name: str, **kwargs) -> Segmenter:
    """Build the segmenter registered as ``name``."""
    _load_builtins()
    if name not in SEGMENTERS:
        raise UnknownNameError("segmenter", name, list(SEGMENTERS))
    return SEGMENTERS[name](**kwargs)

"""Generator adapters and segmenters behind small protocols, registered by name.

Adding a GAN is one adapter file that subclasses :class:`GeneratorAdapter` and decorates it
with :func:`register_generator`; the module must be listed in ``registry._BUILTIN_MODULES``.
"""

from lineargan.models.protocols import (
    DifferentiableSegmenter,
    GeneratorAdapter,
    GeneratorOutput,
    NetworkSegmenter,
    Segmenter,
    SegmenterOutput,
)
from lineargan.models.registry import (
    get_generator,
    get_segmenter,
    list_generators,
    list_segmenters,
    register_generator,
    register_segmenter,
)

__all__ = [
    "DifferentiableSegmenter",
    "GeneratorAdapter",
    "GeneratorOutput",
    "NetworkSegmenter",
    "Segmenter",
    "SegmenterOutput",
    "get_generator",
    "get_segmenter",
    "list_generators",
    "list_segmenters",
    "register_generator",
    "register_segmenter",
]

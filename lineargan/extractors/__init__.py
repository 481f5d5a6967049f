"""Semantic extractors: LSE (linear) and the nonlinear NSE-1 / NSE-2 baselines, by name."""

from lineargan.extractors.base import (
    EXTRACTORS,
    SemanticExtractor,
    build_extractor,
)
from lineargan.extractors.linear import LSE
from lineargan.extractors.nonlinear import NSE1, NSE2

__all__ = [
    "EXTRACTORS",
    "LSE",
    "NSE1",
    "NSE2",
    "SemanticExtractor",
    "build_extractor",
]

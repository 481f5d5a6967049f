"""Per-process model cache, so mapped tasks load G and P once per worker, not per chunk; and
the models that made a store, checked against its fingerprint."""

from __future__ import annotations

import json
from functools import lru_cache

from lineargan.config import model_kwargs
from lineargan.device import resolve_device
from lineargan.errors import FingerprintMismatchError
from lineargan.models import GeneratorAdapter, Segmenter, get_generator, get_segmenter
from storage.feature_store import FeatureStore


@lru_cache(maxsize=4)
def cached_generator(
    name: str, device: str = "cpu", checkpoint: str | None = None, options: str = "{}"
) -> GeneratorAdapter:
    """Generator ``name`` with ``options`` (canonical JSON, see ``config.options_json``)."""
    kwargs = model_kwargs(checkpoint, json.loads(options))
    return get_generator(name, **kwargs).to(resolve_device(device))


@lru_cache(maxsize=4)
def cached_segmenter(name: str, checkpoint: str | None = None, options: str = "{}") -> Segmenter:
    return get_segmenter(name, **model_kwargs(checkpoint, json.loads(options)))


def store_generator(store: FeatureStore, device: str = "auto") -> GeneratorAdapter:
    """The generator (same weights) that made ``store``, on ``device``."""
    spec = store.spec
    g = cached_generator(
        spec.generator,
        str(resolve_device(device)),
        store.group.attrs.get("generator_checkpoint"),
        spec.generator_options,
    )
    if g.weights_sha256 != spec.generator_sha256:
        raise FingerprintMismatchError(
            f"store {store.target.url} was made with other {spec.generator} weights than the "
            "loaded ones",
            "use a new data_root for these models, or restore the original checkpoint",
        )
    return g


def store_segmenter(store: FeatureStore) -> Segmenter:
    """The segmenter (same classes) that labelled ``store``."""
    spec = store.spec
    p = cached_segmenter(
        spec.segmenter, store.group.attrs.get("segmenter_checkpoint"), spec.segmenter_options
    )
    if tuple(p.class_names) != spec.class_names:
        raise FingerprintMismatchError(
            f"store {store.target.url} was labelled with other classes than the loaded "
            f"{spec.segmenter}",
            "use a new data_root for these models, or restore the original segmenter",
        )
    return p

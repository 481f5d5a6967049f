"""Per-process model cache, so mapped tasks load G and P once per worker, not per chunk; and
the models that made a store, checked against its fingerprint."""

from __future__ import annotations

from functools import lru_cache

from lineargan.device import resolve_device
from lineargan.errors import FingerprintMismatchError
from lineargan.models import GeneratorAdapter, Segmenter, get_generator, get_segmenter
from storage.feature_store import FeatureStore


@lru_cache(maxsize=4)
def cached_generator(
    name: str, device: str = "cpu", checkpoint: str | None = None
) -> GeneratorAdapter:
    kwargs = {"checkpoint": checkpoint} if checkpoint else {}
    return get_generator(name, **kwargs).to(resolve_device(device))


@lru_cache(maxsize=4)
def cached_segmenter(name: str) -> Segmenter:
    return get_segmenter(name)


def store_generator(store: FeatureStore, device: str = "auto") -> GeneratorAdapter:
    """The generator (same weights) that made ``store``, on ``device``."""
    spec = store.spec
    g = cached_generator(
        spec.generator, str(resolve_device(device)), store.group.attrs.get("generator_checkpoint")
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
    p = cached_segmenter(spec.segmenter)
    if tuple(p.class_names) != spec.class_names:
        raise FingerprintMismatchError(
            f"store {store.target.url} was labelled with other classes than the loaded "
            f"{spec.segmenter}",
            "use a new data_root for these models, or restore the original segmenter",
        )
    return p

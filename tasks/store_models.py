"""The models that made a store, loaded and checked against its fingerprint.

A store records its generator and segmenter by name, options and weights hash; whoever reads
it again (the cache filling a chunk, SCS calling G, a regenerate-policy store's
:class:`~tasks.feature_source.FeatureSource` recomputing its features) gets exactly those
models, seen through the store's policy, or a one-line error. Loading and running models is
pipeline work, so it lives here, above ``storage/``, which only holds the bytes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from lineargan.cache import generator_batch, generator_precision
from lineargan.config import options_json
from lineargan.device import resolve_device
from lineargan.errors import FingerprintMismatchError, LinearGanError
from lineargan.models import GeneratorAdapter, Segmenter
from lineargan.models.registry import cached_generator, cached_segmenter, check_generator_options
from lineargan.store_policy import StorePolicy, with_policy
from storage.feature_store import FeatureStore


def store_policy(store: FeatureStore) -> StorePolicy:
    return StorePolicy(**json.loads(store.spec.store_policy))


def store_generator(
    store: FeatureStore, device: str = "auto", latent_space: str | None = None
) -> GeneratorAdapter:
    """The generator (same weights and options) that made ``store``, on ``device``, serving
    the store's layers at the store's resolution. ``latent_space``: the same weights taking
    latents of another space (SCS/SIE's ``edit_space``); its features are the same function
    of the synthesised image, so extractors fitted on the store read them unchanged."""
    spec = store.spec
    options = store.group.attrs.get("generator_load_options", spec.generator_options)
    if latent_space is not None:
        options = options_in_latent_space(spec.generator, json.loads(options), latent_space)
    return _loaded(store, device, options)


def noise_generator(store: FeatureStore, device: str = "auto") -> GeneratorAdapter | None:
    """:func:`store_generator` drawing fresh per-layer noise on every pass
    (``randomize_noise``: the authors' few-shot epochs), or None for a generator without
    noise inputs, which has nothing to draw afresh."""
    spec = store.spec
    options = json.loads(store.group.attrs.get("generator_load_options", spec.generator_options))
    noisy = {**options, "randomize_noise": True}
    try:
        check_generator_options(spec.generator, noisy)
    except LinearGanError:
        return None
    return _loaded(store, device, options_json(noisy))


def _loaded(store: FeatureStore, device: str, options: str) -> GeneratorAdapter:
    """The store's generator loaded with ``options`` (canonical JSON), checked against the
    store's weights and seen through its policy."""
    spec = store.spec
    g = cached_generator(
        spec.generator,
        str(resolve_device(device)),
        store.group.attrs.get("generator_checkpoint"),
        options,
    )
    if g.weights_sha256 != spec.generator_sha256:
        raise FingerprintMismatchError(
            f"store {store.target.url} was made with other {spec.generator} weights than the "
            "loaded ones",
            "use a new data_root for these models, or restore the original checkpoint",
        )
    return with_policy(g, store_policy(store), spec.generator_precision)


def options_in_latent_space(generator: str, options: dict[str, Any], latent_space: str) -> str:
    """The generator's load options with ``latent_space`` set, as canonical JSON; a one-line
    error for a generator that has no latent spaces (runs check this before any work)."""
    if not takes_latent_space(generator, options):
        raise LinearGanError(
            f"generator {generator!r} cannot take latents of another space "
            f"(edit_space {latent_space!r}): it has no latent_space option",
            "leave edit_space unset to edit in the store's own latent space",
        )
    return options_json({**options, "latent_space": latent_space})


def takes_latent_space(generator: str, options: dict[str, Any]) -> bool:
    """Whether ``generator`` (with its load ``options``) has a ``latent_space`` option, i.e.
    latent spaces besides its own (the DCGAN has only z)."""
    try:
        check_generator_options(generator, {**options, "latent_space": "z"})
    except LinearGanError:
        return False
    return True


def store_takes_latent_space(store: FeatureStore) -> bool:
    """:func:`takes_latent_space` for the generator that made ``store``."""
    options = store.group.attrs.get("generator_load_options", store.spec.generator_options)
    return takes_latent_space(store.spec.generator, json.loads(options))


def store_segmenter(store: FeatureStore) -> Segmenter:
    """The segmenter (same classes) that labelled ``store``."""
    spec = store.spec
    p = cached_segmenter(
        spec.segmenter,
        store.group.attrs.get("segmenter_checkpoint"),
        store.group.attrs.get("segmenter_load_options", spec.segmenter_options),
    )
    if tuple(p.class_names) != spec.class_names or p.weights_sha256 != spec.segmenter_sha256:
        raise FingerprintMismatchError(
            f"store {store.target.url} was labelled by other {spec.segmenter} weights or "
            "classes than the loaded ones",
            "use a new data_root for these models, or restore the original segmenter",
        )
    return p


def regenerate_features(
    store: FeatureStore, latents: np.ndarray, generator: GeneratorAdapter | None = None
) -> list[np.ndarray]:
    """The features a stored-feature store would hold for ``latents``: the same generator
    pass on the same chunk of latents, cast to float16 as the cache casts them (``generator``:
    another load of the store's generator, e.g. :func:`noise_generator`'s)."""
    g = generator if generator is not None else store_generator(store)
    device = next(g.parameters()).device
    z = torch.from_numpy(np.ascontiguousarray(latents)).to(device)
    step, parts = generator_batch(g.resolution), []
    for start in range(0, len(z), step):  # split as the cache pass split it
        with torch.inference_mode(), generator_precision(device, store.spec.generator_precision):
            feats = g.forward_features(z[start : start + step])
        parts.append([f.to(torch.float16).cpu().numpy() for f in feats])
    return [np.concatenate(layer) for layer in zip(*parts, strict=True)]

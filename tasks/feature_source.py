"""A store's features as fits, evaluations and analyses read them: stored, or regenerated.

Under the ``regenerate`` store policy a store keeps latents, images and labels but no
features; whoever reads features gets the generator's pass over the chunk's stored latents,
recomputed exactly as the cache stage would have stored them (same weights, policy, precision
and micro-batches, cast to float16). That is model work, so it lives here, above
``storage/``: a :class:`FeatureSource` is a :class:`~storage.feature_store.FeatureStore` whose
chunks come with features whatever the policy, and every reader of features (the training
stream, the evaluation, the analyses) opens stores through it.
"""

from __future__ import annotations

import numpy as np

from storage.feature_store import FeatureStore
from tasks.store_models import regenerate_features


class FeatureSource(FeatureStore):
    """A feature store whose regenerate-policy chunks are completed by its generator."""

    def _regenerated_features(self, latents: np.ndarray) -> list[np.ndarray]:
        return regenerate_features(self, latents)

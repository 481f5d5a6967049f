"""A store's fingerprint: everything that determines its content.

Kept apart from the Zarr code: a store's identity (what the model loaders of
:mod:`tasks.store_models` check) is plain data, readable without opening a store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from lineargan.errors import FingerprintMismatchError

FORMAT_VERSION = 1

# Fields added after format 1 whose default is not written into a fingerprint, so stores
# written before they existed keep theirs.
_DEFAULTS_LEFT_OUT = {
    "generator_options": "{}",
    "segmenter_options": "{}",
    "store_policy": "{}",
    "generator_precision": "float32",
}


@dataclass(frozen=True)
class StoreSpec:
    """Everything that determines a store's content; its JSON is the store fingerprint."""

    generator: str
    generator_sha256: str
    segmenter: str
    segmenter_sha256: str
    class_names: tuple[str, ...]
    split: str
    seed: int
    n: int
    chunk_size: int
    latent_dim: int
    resolution: int
    layer_names: tuple[str, ...]
    layer_shapes: tuple[tuple[int, int, int], ...]
    format_version: int = FORMAT_VERSION
    # adapter options (canonical JSON): they change images or labels, so they are identity
    generator_options: str = "{}"
    segmenter_options: str = "{}"
    # what the store keeps of the features (``StorePolicy.identity()``); layer_names and
    # layer_shapes are the served layers
    store_policy: str = "{}"
    generator_precision: str = "float32"

    def fingerprint(self) -> dict:
        fp = json.loads(json.dumps(asdict(self)))  # tuples → lists, as stored in attrs
        # no options, no entry: stores written before options existed keep their fingerprint
        for key, default in _DEFAULTS_LEFT_OUT.items():
            if fp[key] == default:
                del fp[key]
        return fp

    def digest(self) -> str:
        blob = json.dumps(self.fingerprint(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    @classmethod
    def from_fingerprint(cls, fp: dict) -> StoreSpec:
        fp = dict(fp)
        fp["class_names"] = tuple(fp["class_names"])
        fp["layer_names"] = tuple(fp["layer_names"])
        fp["layer_shapes"] = tuple(tuple(s) for s in fp["layer_shapes"])
        return cls(**fp)

    @property
    def regenerates(self) -> bool:
        """Features are not stored but recomputed from the latents on every read."""
        return json.loads(self.store_policy).get("features") == "regenerate"

    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.chunk_size)

    def chunk_slice(self, i: int) -> slice:
        return slice(i * self.chunk_size, min((i + 1) * self.chunk_size, self.n))


# What must agree between a training and an evaluation store for a model fitted on one to be
# evaluated on the other (split, seed, n and chunking may differ).
SAME_MODEL_FIELDS = (
    "generator",
    "generator_sha256",
    "segmenter",
    "segmenter_sha256",
    "class_names",
    "resolution",
    "layer_names",
    "layer_shapes",
    "format_version",
    "generator_options",
    "segmenter_options",
    "store_policy",
    "generator_precision",
)


def check_same_models(train: StoreSpec, evals: StoreSpec) -> None:
    """Refuse a train/eval pair made by different models before any training starts (a
    different checkpoint with the same shapes would otherwise be evaluated silently)."""

    def show(v: object) -> str:
        return repr(v)[:24] + "…" if len(repr(v)) > 25 else repr(v)

    diffs = [
        f"{f}: {show(getattr(train, f))} vs {show(getattr(evals, f))}"
        for f in SAME_MODEL_FIELDS
        if getattr(train, f) != getattr(evals, f)
    ]
    if diffs:
        raise FingerprintMismatchError(
            "the training and evaluation stores were made by different models ("
            + "; ".join(diffs)
            + ")",
            "build both stores from one configuration (same generator, checkpoint and segmenter)",
        )


def _describe(fp: dict, other: dict) -> str:
    diffs = [k for k in sorted(set(fp) | set(other)) if fp.get(k) != other.get(k)]
    return ", ".join(f"{k}: store has {other.get(k)!r}, asked for {fp.get(k)!r}" for k in diffs[:3])

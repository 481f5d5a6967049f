"""SeFa's directions measured by linear semantics: the parameters and the mask arithmetic.

SeFa (:mod:`lineargan.sefa`) finds directions without labels; what one does is left to a person
looking at image grids. Here the run's full LSE labels every edited image, so each direction
is measured per class against the unedited mask of the same latent:

- ``area_before`` / ``area_after``: the class's share of the image's pixels (mean over the
  samples), ``area_change`` their difference (``area_change_rel``: relative to before);
- ``relabelled``: share of the image's pixels that entered or left the class (pixels in exactly
  one of the two masks);
- ``iou``: intersection / union of the class's two masks, pooled over the samples;
- ``inside``: the share of all changed pixels (any label change) that lie in the class's region
  (the union of its two masks), so 1 − ``inside`` is the share outside it.

- ``region``: the class's region as a share of the image; ``inside`` / ``region`` is the
  *enrichment*, how much denser the changes are inside the region than a change spread evenly
  over the image would be (a face-sized class holds most of any change by its size alone).

A direction is named by the non-background class whose region holds the largest share of its
changes at the largest |α| (both signs pooled): "<class> grows" / "<class> shrinks" (the sign of
its area change at +α) when that share reaches ``dominance`` and its enrichment reaches
``enrichment``, else "global / no dominant class" — the directions a reader would call semantic
are exactly the named ones; ``largest_change`` says what a global one does most.

The supervised counterpart: for each class, the direction that increases its soft LSE area
(mean softmax probability over the pixels) fastest, the mean over the samples of its gradient
w.r.t. the shift SeFa applies (in w for a style-based generator: the sum over the edited w+
entries), normalised; its cosine with each SeFa direction says which directions are semantic
and which classes no top direction moves.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, PositiveInt, field_validator

from lineargan.config import FitConfig, Frozen, RunConfig

GLOBAL = "global / no dominant class"

# SeFa's code: distances −3…3 in 11 steps, its top 5 semantics; the small profiles fewer.
_PROFILE = {
    "paper": {
        "n_directions": 10,
        "alphas": tuple(np.linspace(-3, 3, 11).round(6)),
        "n_samples": 64,
    },
    "quick": {"n_directions": 5, "alphas": (-3.0, -1.5, 0.0, 1.5, 3.0), "n_samples": 16},
    "smoke": {"n_directions": 2, "alphas": (-3.0, 0.0, 3.0), "n_samples": 2},
}


class SefaParams(Frozen):
    """The top ``n_directions`` SeFa directions of ``layers`` (style-based generators: all,
    coarse, middle, fine or indices; ``module``: the torch-hooks module reading the latent),
    each applied at every α of ``alphas`` to ``n_samples`` seeded latents, labelled by ``lse``
    (Table 1's fit, reused) and, with ``reference``, by the run's segmenter."""

    n_directions: PositiveInt = 10
    alphas: tuple[float, ...] = tuple(np.linspace(-3, 3, 11).round(6))
    n_samples: PositiveInt = 64
    layers: str | tuple[int, ...] = "all"
    module: str | None = None
    normalize: bool = True  # genforce/sefa's unit rows (docs/protocol.md)
    order: Literal["eigenvalue", "solver"] = "eigenvalue"
    reference: bool = True
    dominance: float = Field(0.5, gt=0, le=1)
    enrichment: float = Field(2.0, ge=1)
    seed: int = Field(0, ge=0)
    batch: PositiveInt = 32
    lse: FitConfig = FitConfig(extractor="LSE")

    @field_validator("alphas")
    @classmethod
    def _check_alphas(cls, alphas: tuple[float, ...]) -> tuple[float, ...]:
        if not alphas or max(abs(a) for a in alphas) == 0:
            raise ValueError("alphas need at least one non-zero distance")
        return tuple(sorted(set(float(a) for a in alphas)))

    @classmethod
    def for_run(cls, config: RunConfig) -> SefaParams:
        """The profile's sizes, labelled by the run's own LSE (so Table 1's fit is reused)."""
        sizes = _PROFILE.get(config.profile, _PROFILE["paper"])
        return cls(**sizes, lse=config.fit("LSE"))

    @property
    def extremes(self) -> tuple[float, float]:
        """The largest distance on each side (0 where the grid has none)."""
        return min(min(self.alphas), 0.0), max(max(self.alphas), 0.0)


def class_changes(before: np.ndarray, after: np.ndarray, n_class: int) -> dict[str, np.ndarray]:
    """Pixel counts per class (summed over the images) of two label maps (B, H, W) of the same
    latents: areas before/after, intersection, union, and the number of changed pixels."""
    b, a = before.ravel(), after.ravel()  # none at all: no image the segmenter saw twice

    def count(labels: np.ndarray) -> np.ndarray:
        return np.bincount(labels, minlength=n_class)[:n_class].astype(np.int64)

    area_b, area_a, inter = count(b), count(a), count(b[b == a])
    return {
        "area_before": area_b,
        "area_after": area_a,
        "intersection": inter,
        "union": area_b + area_a - inter,
        "changed": np.int64((b != a).sum()),
        "pixels": np.int64(b.size),
    }


def change_rows(counts: dict[str, np.ndarray], class_names: tuple[str, ...]) -> pd.DataFrame:
    """One row per class of :func:`class_changes`' counts, as the fractions the table holds."""
    pixels, changed = float(counts["pixels"]) or np.nan, float(counts["changed"])
    before, after = counts["area_before"], counts["area_after"]
    union, inter = counts["union"], counts["intersection"]
    relabelled = union - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame(
            {
                "class_index": np.arange(len(class_names)),
                "class_name": list(class_names),
                "area_before": before / pixels,
                "area_after": after / pixels,
                "area_change": (after - before) / pixels,
                "area_change_rel": np.where(before > 0, (after - before) / before, np.nan),
                "relabelled": relabelled / pixels,
                "iou": np.where(union > 0, inter / union, np.nan),
                "inside": relabelled / changed if changed else np.zeros(len(class_names)),
                "region": union / pixels,
                "changed": changed / pixels,
                "relabelled_px": relabelled.astype(np.int64),
                "changed_px": np.int64(changed),
            }
        )


def name_direction(rows: pd.DataFrame, params: SefaParams) -> dict:
    """The name of one direction from its rows (one labeller): the non-background class whose
    region holds the largest share of the changes at the extreme distances, if ≥ ``dominance``."""
    lo, hi = params.extremes
    ends = rows[rows.alpha.isin([a for a in (lo, hi) if a != 0])]
    changed = ends.drop_duplicates("alpha").changed_px.sum()
    classes = ends[ends.class_index != 0].groupby("class_index")
    share = classes.relabelled_px.sum()
    out = {
        "dominant_class": "",
        "dominant_share": 0.0,
        "dominant_enrichment": 0.0,
        "name": GLOBAL,
        "semantic": False,
    }
    if changed == 0 or share.empty:
        out["name"] = "no change"
        return out
    share = share / changed
    top = int(share.idxmax())
    enrichment = float(share[top] / classes.region.mean()[top])
    name = str(rows.loc[rows.class_index == top, "class_name"].iloc[0])
    out.update(
        dominant_class=name, dominant_share=float(share[top]), dominant_enrichment=enrichment
    )
    if share[top] >= params.dominance and enrichment >= params.enrichment:
        side = rows[(rows.class_index == top) & (rows.alpha == (hi if hi else lo))]
        grows = float(side.area_change.iloc[0]) * (1 if hi else -1) > 0
        out.update(name=f"{name} {'grows' if grows else 'shrinks'} with +α", semantic=True)
    return out


def largest_change(rows: pd.DataFrame) -> str:
    """The non-background class whose area changes most at one α, as "skin −19.3 pp"."""
    rows = rows[rows.class_index != 0]
    if rows.empty:
        return ""
    top = rows.loc[rows.area_change.abs().idxmax()]
    return f"{top.class_name} {100 * top.area_change:+.1f} pp"


def supervised_cosines(
    gradients: np.ndarray, directions: np.ndarray, class_names: tuple[str, ...]
) -> pd.DataFrame:
    """Per class (background included) the unit mean gradient of its soft area, and its cosine
    with every given SeFa direction (rows of ``directions``); ``span_share``: Σ cos², the share
    of the supervised direction inside the span of the given directions."""
    rows = []
    for c, g in enumerate(gradients):
        norm = float(np.linalg.norm(g))
        unit = g / norm if norm > 0 else g
        cos = directions @ unit
        for k, value in enumerate(cos):
            rows.append(
                {
                    "class_index": c,
                    "class_name": class_names[c],
                    "direction": k,
                    "cosine": float(value),
                    "gradient_norm": norm,
                    "span_share": float(np.sum(cos**2)),
                }
            )
    return pd.DataFrame(rows)

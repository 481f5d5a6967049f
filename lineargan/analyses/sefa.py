"""SeFa's directions measured by linear semantics: the science the ``sefa`` analysis and
``lineargan-edit sefa`` share, no I/O.

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

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image
from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from lineargan.cache import to_uint8
from lineargan.config import Frozen
from lineargan.figures import colorize, tile_grid
from lineargan.models import GeneratorAdapter, Segmenter
from lineargan.predictors import ExtractorPredictor
from lineargan.sefa import Factorisation, edit, shared_shift_gradient

GLOBAL = "global / no dominant class"
LSE = "LSE"


@dataclass(frozen=True)
class Naming:
    """How a direction is named: the distances measured, the share of the changes one class's
    region must hold (``dominance``) and how much denser than its size predicts
    (``enrichment``)."""

    alphas: tuple[float, ...]
    dominance: float = 0.5
    enrichment: float = 2.0

    @property
    def extremes(self) -> tuple[float, float]:
        """The largest distance on each side (0 where the grid has none)."""
        return min(min(self.alphas), 0.0), max(max(self.alphas), 0.0)


class SefaOptions(Frozen):
    """What both the ``sefa`` analysis and ``lineargan-edit sefa`` choose: the distances, the
    layers (style-based generators: all, coarse, middle, fine or w+ indices; ``module``: the
    torch-hooks module reading the latent), SeFa's variant (docs/protocol.md) and the naming
    thresholds."""

    alphas: tuple[float, ...] = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
    layers: str | tuple[int, ...] = "all"
    module: str | None = None
    normalize: bool = True  # genforce/sefa's unit rows
    order: Literal["eigenvalue", "solver"] = "eigenvalue"
    dominance: float = Field(0.5, gt=0, le=1)
    enrichment: float = Field(2.0, ge=1)
    batch: PositiveInt = 32

    @field_validator("alphas")
    @classmethod
    def _check_alphas(cls, alphas: tuple[float, ...]) -> tuple[float, ...]:
        if not alphas or max(abs(a) for a in alphas) == 0:
            raise ValueError("alphas need at least one non-zero distance")
        return tuple(sorted({float(a) for a in alphas}))

    @property
    def naming(self) -> Naming:
        return Naming(self.alphas, self.dominance, self.enrichment)


class SefaBrowseParams(SefaOptions):
    """``lineargan-edit sefa``: the top ``directions`` on ``n`` draws from ``seed``."""

    directions: PositiveInt = 5
    n: PositiveInt = 2
    seed: NonNegativeInt = 0


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


def name_direction(rows: pd.DataFrame, naming: Naming) -> dict:
    """The name of one direction from its rows (one labeller): the non-background class whose
    region holds the largest share of the changes at the extreme distances, if ≥ ``dominance``."""
    lo, hi = naming.extremes
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
    if share[top] >= naming.dominance and enrichment >= naming.enrichment:
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


class Labeller:
    """G's images of a batch of latents and their labels, ``batch`` latents at a time: by the
    LSE (on G's features), or by a segmenter on the images (``lineargan-edit sefa`` without an
    LSE). ``name`` is what the rows call the labeller."""

    def __init__(
        self,
        generator: GeneratorAdapter,
        lse: ExtractorPredictor | None,
        batch: int,
        segmenter: Segmenter | None = None,
    ) -> None:
        if (lse is None) == (segmenter is None):
            raise ValueError("label with an LSE or with a segmenter")
        self.generator, self.lse, self.batch, self.segmenter = generator, lse, batch, segmenter
        self.name = LSE if segmenter is None else segmenter.name

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for start in range(0, len(latents), self.batch):
            out = self.generator(latents[start : start + self.batch])
            images.append(to_uint8(out.image))
            if self.lse is not None:
                logits = self.lse(out, self.generator.resolution)
                labels.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
        images_np = np.concatenate(images)
        if self.segmenter is not None:
            return images_np, self.segmenter.segment(images_np).labels
        return images_np, np.concatenate(labels)


def reference_labels(segmenter: Segmenter, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = segmenter.segment(images)
    detected = out.detected if len(out.detected) else np.ones(len(images), bool)
    return out.labels, detected


def direction_rows(
    k: int,
    alphas: tuple[float, ...],
    fact: Factorisation,
    latents: torch.Tensor,
    label: Labeller,
    base: dict[str, np.ndarray],
    segmenter: Segmenter | None,
    class_names: tuple[str, ...],
) -> pd.DataFrame:
    """The per-class rows of direction ``k`` at every α, for the LSE and the segmenter."""
    parts = []
    n_class = len(class_names)
    for alpha in alphas:
        images, lse = label(edit(latents, fact, k, alpha))
        rows = change_rows(class_changes(base["lse"], lse, n_class), class_names)
        parts.append(rows.assign(alpha=alpha, labeller=label.name, n_images=len(lse)))
        if segmenter is not None:
            ref, detected = reference_labels(segmenter, images)
            both = base["detected"] & detected
            rows = change_rows(class_changes(base["ref"][both], ref[both], n_class), class_names)
            parts.append(rows.assign(alpha=alpha, labeller=segmenter.name, n_images=both.sum()))
    return pd.concat(parts, ignore_index=True).assign(direction=k)


def supervised_gradients(
    generator: GeneratorAdapter,
    lse: ExtractorPredictor,
    fact: Factorisation,
    latents: torch.Tensor,
    n_class: int,
    batch: int,
) -> np.ndarray:
    """(n_class, d): per class, the mean over the latents of the gradient of its soft LSE area
    (mean softmax probability) w.r.t. the shift SeFa applies."""
    total = torch.zeros(n_class, fact.dim, dtype=torch.float64)
    for start in range(0, len(latents), batch):
        x = latents[start : start + batch].detach().clone().requires_grad_(True)
        logits = lse(generator(x), generator.resolution)
        area = logits.softmax(1).mean((2, 3))  # (B, n_class)
        for c in range(n_class):
            (grad,) = torch.autograd.grad(area[:, c].sum(), x, retain_graph=c < n_class - 1)
            total[c] += shared_shift_gradient(grad, fact).sum(0).double().cpu()
    return (total / len(latents)).numpy()


def direction_summary(
    fact: Factorisation, k: int, rows: pd.DataFrame, naming: Naming, labeller: str = LSE
) -> dict:
    """One direction's row: eigenvalue (and its share of the sum), edited entries, vector, its
    name by the LSE's rows and by the segmenter's (when measured), the pixels the LSE relabels
    at the largest distance and the class whose area changes most there."""
    ours = rows[rows.labeller == labeller]
    ref = rows[rows.labeller != labeller]
    by_ref = name_direction(ref, naming) if len(ref) else {"name": "", "dominant_class": ""}
    lo, hi = naming.extremes
    at_max = ours[ours.alpha == (hi or lo)]
    return {
        "direction": k,
        "eigenvalue": float(fact.eigenvalues[k]),
        "eigenvalue_share": float(fact.eigenvalues[k] / fact.eigenvalues.sum()),
        "layers": list(fact.layers),
        "vector": [float(v) for v in fact.directions[k]],
        **name_direction(ours, naming),
        "reference_name": by_ref["name"],
        "reference_dominant_class": by_ref["dominant_class"],
        "changed_at_max": float(at_max.changed.iloc[0]),
        "largest_change": largest_change(at_max),
    }


def sefa_grid(
    alphas: tuple[float, ...],
    fact: Factorisation,
    latent: torch.Tensor,
    label: Labeller,
    names: list[str],
    n_class: int,
) -> Image.Image:
    """SeFa's grid for one latent: rows = directions, columns = α, image over its LSE mask."""
    rows, titles = [], []
    for k, name in enumerate(names):
        cells = []
        for alpha in alphas:
            image, mask = label(edit(latent, fact, k, alpha))
            cells.append(np.concatenate([image[0], colorize(mask[0], n_class)]))
        rows.append(cells)
        # Pillow's default font has no Greek letters
        titles.append(f"#{k} eigenvalue {fact.eigenvalues[k]:.1f}: {name.replace('α', 'alpha')}")
    return tile_grid(rows, titles, [f"alpha {a:+g}" for a in alphas])

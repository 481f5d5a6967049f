"""SeFa: closed-form latent directions from the weights that read the latent (Shen & Zhou,
"Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021).

The first latent-facing map of a generator is affine, y = A z + b, so moving the latent by α n
moves y by α A n. SeFa takes the directions A changes most: the unit n maximising ‖A n‖², and
for k directions the k orthonormal maximisers, i.e. the eigenvectors of AᵀA with the largest
eigenvalues. Which A that is depends on the family (:meth:`GeneratorAdapter.latent_weights`):

- DCGAN / PGGAN: the map of z to the 4×4 block (one row per output channel and pixel);
- StyleGAN / StyleGAN2: the style affines of the chosen synthesis layers, stacked (rows of
  every layer), so a direction lives in w and an edit shifts those w+ entries only;
- torch-hooks: the linear module the user names whose input is the latent.

As SeFa's reference code (``utils.factorize_weight``) does, each output unit's weight vector
(a row of A, a column of the code's (d, out) matrix) is scaled to unit norm first
(``normalize``), so layers and units of different scale weigh alike. The paper ranks directions
by eigenvalue; the code keeps the order of ``np.linalg.eig`` (``order="solver"``, a named
setting, see docs/protocol.md). Eigenvector signs are arbitrary; they are fixed here so the
largest-magnitude entry is positive, so two runs name the same +α side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from lineargan.errors import LinearGanError
from lineargan.models.protocols import GeneratorAdapter, LatentWeights

# SeFa's layer groups of a style-based generator (its interface's "0-1", "2-5", "6-13"),
# clipped to the generator's w+ entries.
LAYER_GROUPS: dict[str, tuple[int, int]] = {"coarse": (0, 2), "middle": (2, 6), "fine": (6, 14)}
Order = Literal["eigenvalue", "solver"]
LayerSpec = str | Sequence[int]
WP_SPACES = ("wp", "trunc-wp")  # spaces whose latents are w+ itself, flattened


def resolve_layers(layers: LayerSpec, num_layers: int) -> tuple[int, ...]:
    """The w+ entries of ``layers``: ``"all"``, a SeFa group, or explicit indices."""
    if isinstance(layers, str):
        if layers == "all":
            return tuple(range(num_layers))
        if layers not in LAYER_GROUPS:
            raise LinearGanError(
                f"unknown SeFa layer group {layers!r}",
                f"use all, {', '.join(LAYER_GROUPS)} or a list of layer indices",
            )
        lo, hi = LAYER_GROUPS[layers]
        chosen = tuple(range(lo, min(hi, num_layers)))
    else:
        chosen = tuple(sorted({int(i) for i in layers}))
        bad = [i for i in chosen if not 0 <= i < num_layers]
        if bad:
            raise LinearGanError(
                f"SeFa layers {bad} are outside the generator's {num_layers} w+ entries",
                f"choose indices in 0..{num_layers - 1}",
            )
    if not chosen:
        raise LinearGanError(
            f"SeFa layers {layers!r} select none of the generator's {num_layers} w+ entries",
            "choose another group or list",
        )
    return chosen


def factorize(
    weights: Sequence[np.ndarray | torch.Tensor],
    normalize: bool = True,
    order: Order = "eigenvalue",
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (d,) and unit directions (d, d), one per row, of AᵀA for the (out_i, d)
    matrices ``weights`` stacked into A; ``normalize`` scales every row of A to unit norm."""
    a = np.concatenate(
        [np.asarray(w.detach().cpu() if isinstance(w, torch.Tensor) else w) for w in weights]
    ).astype(np.float64)
    if normalize:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
    gram = a.T @ a
    if order == "solver":  # SeFa's code: np.linalg.eig, its order, real parts (gram symmetric)
        values, vectors = np.linalg.eig(gram)
        values, vectors = values.real, vectors.real
    else:  # the paper: the largest eigenvalues first
        values, vectors = np.linalg.eigh(gram)
        values, vectors = values[::-1], vectors[:, ::-1]
    directions = vectors.T.copy()
    pivot = np.abs(directions).argmax(axis=1)
    signs = np.sign(directions[np.arange(len(directions)), pivot])
    return values.copy(), directions * signs[:, None]


@dataclass(frozen=True)
class Factorisation:
    """SeFa's directions for one generator: eigenvalues and unit directions (rows, sorted as
    ``order`` says), and the w+ entries they edit (``layers``; empty: the whole latent)."""

    eigenvalues: np.ndarray
    directions: np.ndarray
    layers: tuple[int, ...]
    num_layers: int  # w+ entries of the generator (0: a plain latent)

    @property
    def dim(self) -> int:
        return int(self.directions.shape[1])


def sefa(
    generator: GeneratorAdapter,
    layers: LayerSpec = "all",
    module: str | None = None,
    normalize: bool = True,
    order: Order = "eigenvalue",
) -> Factorisation:
    """SeFa's directions of ``generator`` (``layers``: the style layers of a style-based one;
    ``module``: the hooked adapter's latent-facing module)."""
    lw: LatentWeights = generator.latent_weights(module)
    if not lw.per_layer:
        values, directions = factorize(lw.weights, normalize, order)
        return Factorisation(values, directions, (), 0)
    chosen = resolve_layers(layers, len(lw.weights))
    values, directions = factorize([lw.weights[i] for i in chosen], normalize, order)
    return Factorisation(values, directions, chosen, len(lw.weights))


def check_editable(generator: GeneratorAdapter, fact: Factorisation) -> None:
    """Refuse a generator whose latents the directions cannot shift: a style-based one must
    take w+ itself (``wp`` or ``trunc-wp``, the adapters' default), a plain one its latent."""
    if fact.num_layers:
        if generator.latent_space not in WP_SPACES:
            raise LinearGanError(
                f"SeFa edits w+ entries, but {generator.name} takes latents in "
                f"{generator.latent_space!r}",
                "load the generator with latent_space wp or trunc-wp",
            )
        expected = fact.num_layers * fact.dim
    else:
        expected = fact.dim
    if generator.latent_dim != expected:
        raise LinearGanError(
            f"SeFa directions of {fact.dim} floats do not fit {generator.name}'s "
            f"{generator.latent_dim}-float latents",
            "factorise the same generator that is edited",
        )


def edit(latents: torch.Tensor, fact: Factorisation, direction: int, alpha: float) -> torch.Tensor:
    """``latents`` moved by ``alpha`` along direction ``direction`` (SeFa's editing: z + α n;
    for a style-based generator, the chosen w+ entries each + α n, the others untouched)."""
    n = torch.as_tensor(fact.directions[direction], dtype=latents.dtype, device=latents.device)
    if not fact.num_layers:
        return latents + alpha * n
    wp = latents.reshape(len(latents), fact.num_layers, fact.dim).clone()
    wp[:, list(fact.layers)] += alpha * n
    return wp.reshape(len(latents), -1)


def shared_shift_gradient(grad: torch.Tensor, fact: Factorisation) -> torch.Tensor:
    """The gradient w.r.t. one shift applied as :func:`edit` applies it, from the gradient
    w.r.t. the latents (B, latent_dim): d/dα f(edit(x, n, α)) = ⟨result, n⟩."""
    if not fact.num_layers:
        return grad
    per_layer = grad.reshape(len(grad), fact.num_layers, fact.dim)
    return per_layer[:, list(fact.layers)].sum(1)

"""The geometry of Sec 3.1/3.3 and Appx F: unit per-pixel feature vectors on the n-sphere.

A pixel's feature vector is the concatenation, along channels, of every generator layer's
feature map brought to **one** resolution ``size`` with the paper's u↑ (bilinear,
``align_corners=False``, the operator of :func:`lineargan.extractors.base.upsample`, applied
here as two small matrix products: :func:`resize`), normalised to unit length.
For the embedded DCGAN: 512@4² + 256@8² + 128@16² + 64@32² → n = 960 channels.

Resolution. The paper only says "one resolution". The default here is the largest feature-map
resolution of the store (:func:`default_resolution`, 32 for the embedded DCGAN): every layer is
upsampled, none is downsampled, and nothing is invented beyond what the finest layer resolves.
The output (label) resolution (64 for the DCGAN) is allowed too, at 4× the cost per image.

Labels at ``size``. Labels are categorical, so they are resampled with nearest sampling at pixel
centres (PyTorch ``nearest-exact``: destination pixel j reads source pixel ⌊(j + ½)·s⌋ for a
scale factor s = H / size). For 64 → 32 that is ``labels[:, 1::2, 1::2]``. The centre of
destination pixel j lies at source coordinate s·j + (s − 1)/2: ``nearest-exact`` hits it
exactly for odd s and, for even s, takes the lower-right of the two source pixels it falls
between (half a source pixel off, unavoidable). PyTorch's legacy ``nearest`` (⌊j·s⌋, i.e.
``labels[:, 0::2, 0::2]``) is shifted by the full (s − 1)/2 towards the top-left for every s,
unlike the pixel-centre convention of ``align_corners=False`` used for the features. When
``size`` equals the label resolution the labels are used as they are.

Everything works on ≤ :data:`MAX_BATCH` images at a time: a 32×32×960 float32 image is 3.9 MB,
so memory never scales with the number of images. The accumulators keep per class only a sum
of unit vectors (n floats) and a count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from lineargan.errors import LinearGanError

MAX_BATCH = 8  # images whose (n, size, size) float32 unit features are held at once
MISSING_SCORE = -3.0  # score of a class without a center: below every cosine in [-1, 1]


def feature_dim(layer_shapes: Sequence[Sequence[int]]) -> int:
    """n = Σ c_i, the length of a pixel's concatenated feature vector."""
    return int(sum(s[0] for s in layer_shapes))


def default_resolution(layer_shapes: Sequence[Sequence[int]]) -> int:
    """The largest feature-map resolution of the generator's layers."""
    return int(max(max(s[1], s[2]) for s in layer_shapes))


def unit_pixel_features(
    feats: Sequence[torch.Tensor | np.ndarray], size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(B, n, size, size) float32: every layer u↑ to ``size``, concatenated, unit length per pixel.

    ``feats`` are one (B, c_i, h_i, w_i) array per layer (float16 as stored, or any float).
    A pixel whose features are all zero stays the zero vector (the norm is clamped at 1e-12).
    """
    b, n = len(feats[0]), sum(int(f.shape[1]) for f in feats)
    out = torch.empty(b, n, size, size, dtype=torch.float32, device=device)
    sq = torch.zeros(b, 1, size, size, dtype=torch.float32, device=device)
    c0 = 0
    for f in feats:
        x = resize(torch.as_tensor(f).to(device).float(), size)
        out[:, c0 : c0 + x.shape[1]] = x
        sq += (x * x).sum(1, keepdim=True)
        c0 += x.shape[1]
    return out.div_(sq.sqrt_().clamp_(min=1e-12))


def resolve_resolution(
    layer_shapes: Sequence[Sequence[int]], out_resolution: int, requested: int | None
) -> int:
    """The resolution unit vectors live at: ``requested``, or :func:`default_resolution`.

    Anything above the output (label) resolution is refused: it would invent pixels."""
    if requested is None:
        return default_resolution(layer_shapes)
    if requested > out_resolution:
        raise LinearGanError(
            f"resolution {requested} exceeds the output resolution {out_resolution}",
            f"choose a resolution <= {out_resolution} (default: the largest feature map)",
        )
    return int(requested)


@lru_cache(maxsize=32)
def _resize_matrix(src: int, size: int, device: str) -> torch.Tensor:
    """(size, src) weights of bilinear resizing along one axis, obtained from ``F.interpolate``
    itself (bilinear, ``align_corners=False``) applied to the identity, so they are exactly the
    weights :func:`lineargan.extractors.base.upsample` uses."""
    eye = torch.eye(src, dtype=torch.float32, device=device)[:, None, :, None]
    cols = F.interpolate(eye, size=(size, 1), mode="bilinear", align_corners=False)
    return cols[:, 0, :, 0].T.contiguous()


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`lineargan.extractors.base.upsample` (bilinear, ``align_corners=False``) computed as
    two small matrix products A_h · x · A_wᵀ: the same separable operator (equal to float
    rounding, see the tests), several times faster than ``F.interpolate`` on CPU."""
    h, w = x.shape[-2:]
    if h == size and w == size:
        return x
    dev = str(x.device)
    return _resize_matrix(h, size, dev) @ x @ _resize_matrix(w, size, dev).T


def labels_at(labels: torch.Tensor | np.ndarray, size: int) -> torch.Tensor:
    """(B, size, size) int64 labels by nearest sampling at pixel centres (see module doc)."""
    lab = torch.as_tensor(labels)
    if lab.shape[-1] == size and lab.shape[-2] == size:
        return lab.long()
    out = F.interpolate(lab[:, None].float(), size=(size, size), mode="nearest-exact")
    return out[:, 0].long()


def image_batches(n: int, batch: int = MAX_BATCH) -> Iterator[slice]:
    """Consecutive slices of at most ``batch`` images covering ``range(n)``."""
    for s in range(0, n, batch):
        yield slice(s, min(s + batch, n))


# -- class centers (Sec 3.3) ---------------------------------------------------------------------


class ClassSumAccumulator:
    """Per class: the sum of its pixels' unit feature vectors and its pixel count (float64)."""

    def __init__(self, n_class: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.n_class, self.dim = int(n_class), int(dim)
        self.sums = torch.zeros(self.n_class, self.dim, dtype=torch.float64, device=device)
        self.counts = torch.zeros(self.n_class, dtype=torch.int64, device=device)

    def update(self, unit: torch.Tensor, labels: torch.Tensor) -> None:
        """``unit`` (B, n, h, w) unit features, ``labels`` (B, h, w) class indices at h×w."""
        b = unit.shape[0]
        y = labels.to(unit.device).reshape(b, -1).long()
        onehot = F.one_hot(y, self.n_class).to(unit.dtype).transpose(1, 2)  # (B, K, h·w)
        # per-batch sums in the features' dtype (≤ 8·h·w terms), accumulated in float64
        batch_sums = torch.bmm(onehot, unit.reshape(b, self.dim, -1).transpose(1, 2)).sum(0)
        self.sums += batch_sums.double()
        self.counts += torch.bincount(y.reshape(-1), minlength=self.n_class)[: self.n_class]

    def centers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(centers (K, n) float32 unit vectors, present (K,) bool).

        c_k = normalise(mean of class k's unit vectors) — the mean's direction, so dividing by
        the count first changes nothing but is what the paper describes. Classes without pixels
        have no center (zero row, ``present`` False).
        """
        present = self.counts > 0
        mean = self.sums / self.counts.clamp(min=1).unsqueeze(1).double()
        return F.normalize(mean, dim=1).float(), present


def center_scores(unit: torch.Tensor, centers: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) cosine c_k · x̂ of each pixel with each center; absent classes get
    :data:`MISSING_SCORE` so they never win."""
    b, n, h, w = unit.shape
    c = centers.to(unit.device, unit.dtype)
    scores = torch.matmul(c, unit.reshape(b, n, h * w)).reshape(b, -1, h, w)
    missing = ~present.to(unit.device)
    if missing.any():
        scores[:, missing] = MISSING_SCORE
    return scores


def segment_by_centers(
    unit: torch.Tensor, centers: torch.Tensor, present: torch.Tensor, out_size: int
) -> torch.Tensor:
    """Nearest-center segmentation (B, out_size, out_size) uint8.

    The cosine score maps are computed at the features' resolution and upsampled bilinearly to
    ``out_size`` before the argmax (as an LSE's logits are), which gives smoother boundaries
    than nearest-upsampling the low-resolution prediction.
    """
    scores = resize(center_scores(unit, centers, present), out_size)
    return scores.argmax(1).to(torch.uint8)


# -- fair sampling and cosine similarity (Appx F) -------------------------------------------------


class FairSampler:
    """Algorithm 1 (Appx F) over a sequence of label maps, keeping only per-class sums.

    For each visited image and each class k whose pool holds fewer than T2 vectors and which has
    at least T1 pixels in the image, T1 of those pixels are chosen at random without replacement
    and their unit vectors join pool k. Pools therefore always hold a multiple of T1 vectors and,
    since T2 is a multiple of T1, never more than T2. Only the running sum and count of each pool
    are kept: that is all :func:`pool_cosine_matrix` needs.

    Use in two steps so features are computed only for images that contribute: :meth:`plan`
    decides (from labels alone) which pixels of each image are drawn and reserves the counts;
    :meth:`accumulate` adds the unit vectors of those pixels.
    """

    def __init__(self, n_class: int, t1: int, t2: int, seed: int = 0) -> None:
        if t1 < 1 or t2 < t1 or t2 % t1:
            raise ValueError(f"need 1 <= T1 <= T2 and T2 a multiple of T1, got T1={t1}, T2={t2}")
        self.n_class, self.t1, self.t2 = int(n_class), int(t1), int(t2)
        self.rng = np.random.default_rng(seed)
        self.counts = np.zeros(self.n_class, dtype=np.int64)  # vectors drawn into each pool
        self.images_visited = 0
        self.sums: torch.Tensor | None = None  # (K, n) float64, created on first accumulate
        self._added = np.zeros(self.n_class, dtype=np.int64)

    @property
    def done(self) -> bool:
        """Every pool holds T2 vectors (Algorithm 1's stopping rule)."""
        return bool((self.counts >= self.t2).all())

    def plan(self, labels: np.ndarray) -> dict[int, np.ndarray]:
        """Visit one image (labels (h, w) at the sampling resolution): the flat pixel indices
        drawn for each class, ``{k: (T1,) int64}``; empty when nothing is drawn."""
        self.images_visited += 1
        flat = np.asarray(labels).reshape(-1)
        pixel_counts = np.bincount(flat, minlength=self.n_class)
        drawn: dict[int, np.ndarray] = {}
        for k in range(self.n_class):
            if self.counts[k] < self.t2 and pixel_counts[k] >= self.t1:
                where = np.flatnonzero(flat == k)
                drawn[k] = np.sort(self.rng.choice(where, self.t1, replace=False))
                self.counts[k] += self.t1
        return drawn

    def accumulate(self, unit: torch.Tensor, drawn: dict[int, np.ndarray]) -> None:
        """Add the drawn pixels' vectors of one image; ``unit`` (n, h, w) unit features."""
        x = unit.reshape(unit.shape[0], -1)
        if self.sums is None:
            self.sums = torch.zeros(self.n_class, x.shape[0], dtype=torch.float64, device=x.device)
        for k, pix in drawn.items():
            idx = torch.as_tensor(pix, device=x.device)
            self.sums[k] += x[:, idx].double().sum(1)
            self._added[k] += len(pix)

    def means(self, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mean vector per pool (K, n) float64, count per pool (K,)); NaN rows for empty pools."""
        if not np.array_equal(self._added, self.counts):
            raise RuntimeError("FairSampler: some planned draws were never accumulated")
        if self.sums is None:
            n = int(dim or 0)
            return np.full((self.n_class, n), np.nan), self.counts.copy()
        sums = self.sums.cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / self.counts[:, None]
        means[self.counts == 0] = np.nan
        return means, self.counts.copy()


def pool_cosine_matrix(means: np.ndarray) -> np.ndarray:
    """cos(A, B) for every pair of pools from their mean unit vectors (K, n).

    Appx F defines cos(A, B) as the mean of the T2×T2 matrix of pairwise cosines a·b of unit
    vectors a ∈ A, b ∈ B. That mean equals the dot product of the pools' means exactly:
    (1/|A||B|) Σ_i Σ_j a_i·b_j = (1/|A| Σ_i a_i)·(1/|B| Σ_j b_j) = ā·b̄, so no T2×T2 matrix is
    built. The diagonal (intra-class) is |ā|², the mean over *all* |A|² pairs, the i = j pairs
    (cosine 1) included, as in the mean of the full matrix. Empty pools give NaN rows/columns.
    """
    m = np.asarray(means, dtype=np.float64)
    return m @ m.T


def pairwise_mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Brute force: the mean of the |A|×|B| matrix of cosines (for tests and small pools)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a @ b.T).mean())


def rows_intra_above_inter(matrix: np.ndarray) -> tuple[int, int]:
    """(rows whose diagonal is the row maximum, rows with a finite diagonal).

    Only finite entries of a row compete (pools that stayed empty are left out)."""
    wins = total = 0
    for k in range(matrix.shape[0]):
        row = matrix[k]
        if not np.isfinite(row[k]):
            continue
        total += 1
        finite = row[np.isfinite(row)]
        wins += int(row[k] >= finite.max())
    return wins, total

"""The embedded default segmenter: dlib's 68-landmark face model rasterised into face classes.

Images are upsampled ×4 (64 → 256 px), the HOG detector finds the face and the 68-point shape
predictor places landmarks. The landmark polygons are then drawn on a canvas
``RASTER_SCALE`` × the image size, and every image pixel takes the class that covers most of
its ``RASTER_SCALE``² block (ties go to the higher class index, so a thin part beats the
skin or background around it). Sampling one point per pixel instead, as an earlier version
did, aliases thin parts: at 64 px the eyebrows came out as broken 1-pixel lines. Drawing
sizes (the eyebrows' width) are set relative to the face, not in pixels, so the result does
not depend on the canvas scale. When HOG finds no face a fixed central box is used
instead (the generator's faces are roughly aligned); how often that happens is reported per
image in ``SegmenterOutput.detected`` and stored with the cache.

The labels are approximate (a landmark model is not trained on dense masks), but they come
from a real, independent model, which is what the method needs. The 68-landmark model is
trained on iBUG 300-W: non-commercial research use only.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lineargan.errors import CheckpointError
from lineargan.models.protocols import Segmenter, SegmenterOutput
from lineargan.models.registry import register_segmenter
from lineargan.models.weights import sha256_file

FACE_CLASSES = ("background", "skin", "eyebrows", "eyes", "nose", "lips", "mouth")

# Index ranges of the 68-point iBUG scheme.
_JAW = list(range(0, 17))
_BROW_R, _BROW_L = list(range(17, 22)), list(range(22, 27))
_NOSE = [27, 31, 32, 33, 34, 35]
_EYE_R, _EYE_L = list(range(36, 42)), list(range(42, 48))
_LIPS_OUTER, _MOUTH_INNER = list(range(48, 60)), list(range(60, 68))

# Canvas scale of the rasteriser (× the image size) and the recipe's name, which goes into the
# segmenter's identity: stores labelled by another recipe have another fingerprint and are
# refused, never mixed with these labels.
RASTER_SCALE = 8
# dlib's five brow points trace each eyebrow's centre line; the brow is drawn as a band this
# fraction of the jaw width thick (≈ 2 px on a 64-px face).
BROW_WIDTH = 0.05
RASTER_RECIPE = f"polygons-majority-{RASTER_SCALE}x-brow{BROW_WIDTH}"

# Fallback box (left, top, right, bottom) on the 256-px upsample, as fractions of the side:
# the median HOG detection over 512 generated faces of the DigiFace DCGAN (seed 0).
_FALLBACK_BOX = (0.137, 0.289, 0.836, 0.992)


def _landmark_model_path() -> Path:
    """Locate the .dat file without importing face_recognition_models (it needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "face-recognition-models is not installed",
            "pip install face-recognition-models==0.3.0 (see requirements/constraints.txt)",
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.exists():
        raise CheckpointError(f"{path} is missing", "reinstall face-recognition-models==0.3.0")
    return path


class DlibFaceSegmenter(Segmenter):
    """Face parts from dlib landmarks; see the module docstring for the recipe."""

    name = "dlib-face68"
    class_names = FACE_CLASSES
    # Every part is a polygon or line through its landmarks, and the 68 landmarks are placed
    # on every image (in the fallback box when HOG finds no face): a part moves and resizes
    # with them but never appears elsewhere, and all but the mouth (the inner-lip polygon,
    # empty when the lips close) are drawn every time. Lips can vanish only when their polygon
    # is thinner than the majority vote keeps (0.8 % of the quick run's evaluation images).
    template_parts = True
    always_drawn = ("skin", "eyebrows", "eyes", "nose", "lips")

    def __init__(self, upsample: int = 4, detector_upsample: int = 0) -> None:
        import dlib  # imported here so the registry stays importable without dlib

        path = _landmark_model_path()
        # the landmark model's hash plus the labelling recipe: the labels depend on both
        self.weights_sha256 = hashlib.sha256(
            f"{sha256_file(path)}:{RASTER_RECIPE}".encode()
        ).hexdigest()
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))
        self._rect = dlib.rectangle
        self.upsample = upsample
        self.detector_upsample = detector_upsample

    def _landmarks(self, big: np.ndarray) -> tuple[np.ndarray, bool]:
        rects = self._detector(big, self.detector_upsample)
        detected = len(rects) > 0
        if detected:
            rect = max(rects, key=lambda r: r.width() * r.height())
        else:
            side = big.shape[0]
            left, top, right, bottom = (int(round(f * side)) for f in _FALLBACK_BOX)
            rect = self._rect(left, top, right, bottom)
        shape = self._predictor(big, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return pts, detected

    def _rasterise(self, pts: np.ndarray, size: int) -> np.ndarray:
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)

        def poly(idx: list[int], label: int) -> None:
            draw.polygon([tuple(pts[i]) for i in idx], fill=label)

        # Skin: jaw line closed over the brows lifted to the hairline (a landmark model has no
        # forehead points; 0.35 × brow-to-chin height approximates it).
        brows = pts[_BROW_R + _BROW_L]
        lift = 0.35 * (pts[8, 1] - brows[:, 1].mean())
        forehead = [(x, y - lift) for x, y in brows[::-1]]
        draw.polygon([tuple(pts[i]) for i in _JAW] + forehead, fill=1)
        width = max(1, int(round(BROW_WIDTH * (pts[16, 0] - pts[0, 0]))))
        for brow in (_BROW_R, _BROW_L):
            draw.line([tuple(pts[i]) for i in brow], fill=2, width=width)
        poly(_EYE_R, 3)
        poly(_EYE_L, 3)
        poly(_NOSE, 4)
        poly(_LIPS_OUTER, 5)
        poly(_MOUTH_INNER, 6)
        return np.asarray(canvas, dtype=np.uint8)

    def segment(self, images: np.ndarray) -> SegmenterOutput:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError("expected uint8 images of shape (B, H, W, 3)")
        n, h, w, _ = images.shape
        if h != w:
            raise ValueError(f"expected square images, got {h}×{w}")
        factor = self.upsample
        labels = np.zeros((n, h, w), dtype=np.uint8)
        detected = np.zeros(n, dtype=bool)
        for i in range(n):
            big = np.asarray(
                Image.fromarray(images[i]).resize((w * factor, h * factor), Image.BILINEAR)
            )
            pts, detected[i] = self._landmarks(big)
            fine = self._rasterise(pts * (RASTER_SCALE / factor), h * RASTER_SCALE)
            labels[i] = majority_downsample(fine, RASTER_SCALE, len(self.class_names))
        return SegmenterOutput(labels=labels, detected=detected)


def majority_downsample(fine: np.ndarray, factor: int, n_class: int) -> np.ndarray:
    """(H·f, W·f) class map → (H, W): each pixel takes the most frequent class of its f×f
    block; on a tie the higher class index wins (thin parts over skin or background)."""
    hh, ww = fine.shape
    if hh % factor or ww % factor:
        raise ValueError(f"a {hh}×{ww} map does not divide into {factor}×{factor} blocks")
    h, w = hh // factor, ww // factor
    blocks = fine.reshape(h, factor, w, factor).transpose(0, 2, 1, 3).reshape(h, w, -1)
    counts = np.stack([(blocks == k).sum(-1) for k in range(n_class)], axis=-1)
    # argmax takes the first maximum: search the reversed class axis to prefer high indices
    return (n_class - 1 - np.argmax(counts[..., ::-1], axis=-1)).astype(np.uint8)


@register_segmenter("dlib-face68")
def dlib_face68(upsample: int = 4) -> DlibFaceSegmenter:
    return DlibFaceSegmenter(upsample=upsample)

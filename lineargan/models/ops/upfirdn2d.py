"""Upsample, FIR-filter, downsample: the resampling op of StyleGAN2, in plain PyTorch.

Semantics of rosinality's ``op.upfirdn2d`` (and NVIDIA's ``upfirdn_2d``), per channel:

1. insert ``up - 1`` zeros after every input sample (length ``in * up``);
2. pad ``pad0`` zeros before and ``pad1`` after (a negative pad crops);
3. convolve with ``kernel`` (a true convolution: the kernel is flipped, as in the reference);
4. keep every ``down``-th sample, starting at the first.

Output size per axis: ``(in * up + pad0 + pad1 - k + down) // down``.

Instead of materialising the zero-inserted tensor and filtering the full-rate result (the
reference's CPU fallback), the zero insertion is folded into a depthwise transposed
convolution and the decimation into the stride of a depthwise convolution. Both are single
cuDNN calls on CUDA (the "fast path"), skip the multiplications by inserted zeros and the
outputs that decimation would discard, and autograd gives every derivative order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

IntPair = int | Sequence[int]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    """(x, y) factors from an int or an (x, y) pair, the reference's convention."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(v) < 1 for v in pair):
        raise ValueError(f"upfirdn2d: {name} must be a positive int or (x, y) pair, got {value}")
    return int(pair[0]), int(pair[1])


def _pad_or_crop(x: torch.Tensor, x0: int, x1: int, y0: int, y1: int) -> torch.Tensor:
    """Zero-pad the last two axes by non-negative amounts and crop by negative ones.

    Padding comes first, so a crop larger than the signal eats into the other side's padding
    and the output length is always ``len + pad0 + pad1``.
    """
    if max(x0, x1, y0, y1) > 0:
        x = F.pad(x, (max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)))
    h, w = x.shape[-2:]
    return x[..., max(-y0, 0) : h - max(-y1, 0), max(-x0, 0) : w - max(-x1, 0)]


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: IntPair = 1,
    down: IntPair = 1,
    pad: Sequence[int] = (0, 0),
) -> torch.Tensor:
    """Resample (B, C, H, W) ``x`` with the 2-D FIR ``kernel`` (kh, kw).

    ``up``/``down`` are an int or an (x, y) pair; ``pad`` is (p0, p1) for both axes or
    (x0, x1, y0, y1), exactly as rosinality's ``upfirdn2d``.
    """
    up_x, up_y = _pair(up, "up")
    down_x, down_y = _pair(down, "down")
    if len(pad) == 2:
        pad = (pad[0], pad[1], pad[0], pad[1])
    if len(pad) != 4:
        raise ValueError(f"upfirdn2d: pad must have 2 or 4 entries, got {tuple(pad)}")
    px0, px1, py0, py1 = (int(p) for p in pad)
    if x.ndim != 4 or kernel.ndim != 2:
        raise ValueError(
            f"upfirdn2d: need x (B, C, H, W) and kernel (kh, kw), got {tuple(x.shape)} "
            f"and {tuple(kernel.shape)}"
        )
    _, channels, in_h, in_w = x.shape
    kh, kw = kernel.shape
    full_h = in_h * up_y + py0 + py1 - kh + 1  # length before decimation
    full_w = in_w * up_x + px0 + px1 - kw + 1
    if full_h < 1 or full_w < 1:
        raise ValueError(
            f"upfirdn2d: kernel {kh}x{kw} is larger than the padded {in_h}x{in_w} input"
        )
    k = kernel.to(dtype=x.dtype, device=x.device)

    if up_x == 1 and up_y == 1:
        # correlation with the flipped kernel is the convolution; the stride decimates
        weight = torch.flip(k, [0, 1]).expand(channels, 1, kh, kw)
        x = _pad_or_crop(x, px0, px1, py0, py1)
        return F.conv2d(x, weight, stride=(down_y, down_x), groups=channels)

    # A transposed conv with stride `up` is the full convolution of the zero-inserted signal
    # (length (in - 1) * up + k); output sample n of the reference is its sample n + k-1-p0.
    weight = k.expand(channels, 1, kh, kw)
    x = F.conv_transpose2d(x, weight, stride=(up_y, up_x), groups=channels)
    x = _pad_or_crop(
        x,
        -(kw - 1 - px0),
        up_x + px1 - kw,
        -(kh - 1 - py0),
        up_y + py1 - kh,
    )
    if down_x > 1 or down_y > 1:
        x = x[..., ::down_y, ::down_x]
    return x

"""The pure-PyTorch StyleGAN2 ops against literal, loop-by-loop definitions of what they do."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from lineargan.models.ops import FusedLeakyReLU, fused_leaky_relu, upfirdn2d


def reference_upfirdn2d(x, kernel, up, down, pad):
    """The definition, step by step: zero insertion, pad/crop, true convolution, decimation."""
    up_x, up_y = (up, up) if isinstance(up, int) else up
    down_x, down_y = (down, down) if isinstance(down, int) else down
    px0, px1, py0, py1 = pad if len(pad) == 4 else (pad[0], pad[1], pad[0], pad[1])
    b, c, h, w = x.shape
    upsampled = torch.zeros(b, c, h * up_y, w * up_x, dtype=x.dtype)
    for i in range(h):
        for j in range(w):
            upsampled[:, :, i * up_y, j * up_x] = x[:, :, i, j]
    ph, pw = h * up_y + py0 + py1, w * up_x + px0 + px1
    padded = torch.zeros(b, c, ph, pw, dtype=x.dtype)
    for i in range(ph):
        for j in range(pw):
            si, sj = i - py0, j - px0  # a negative pad shifts the other way: a crop
            if 0 <= si < h * up_y and 0 <= sj < w * up_x:
                padded[:, :, i, j] = upsampled[:, :, si, sj]
    kh, kw = kernel.shape
    out = torch.zeros(b, c, ph - kh + 1, pw - kw + 1, dtype=x.dtype)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            for a in range(kh):
                for d in range(kw):  # convolution: kernel index runs backwards
                    out[:, :, i, j] += padded[:, :, i + a, j + d] * kernel[kh - 1 - a, kw - 1 - d]
    return out[:, :, ::down_y, ::down_x]


def blur_kernel(gain: float = 1.0) -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    k = k[None] * k[:, None]
    return k / k.sum() * gain


CASES = [
    # (up, down, pad, kernel shape or "blur" with gain), covering StyleGAN2's three uses
    (1, 1, (1, 1), "blur4"),  # Blur after the up-sampling conv (gain 2²)
    (2, 1, (2, 1), "blur4"),  # ToRGB skip Upsample
    (1, 2, (1, 1), "blur1"),  # Downsample (discriminator)
    ((2, 3), (3, 1), (1, -1, 2, 0), (3, 5)),  # anisotropic factors, one crop
    (3, 2, (-2, 3, 1, -1), (5, 2)),  # up and down together, crops on both axes
    (2, 2, (0, 0), (1, 1)),
    (1, 3, (0, 2, 1, 0), (2, 3)),
]


def make_kernel(spec) -> torch.Tensor:
    if spec == "blur4":
        return blur_kernel(4.0)
    if spec == "blur1":
        return blur_kernel()
    return torch.randn(*spec, dtype=torch.float64)


@pytest.mark.parametrize("up,down,pad,kernel", CASES)
def test_matches_reference_definition(up, down, pad, kernel):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    k = make_kernel(kernel)
    want = reference_upfirdn2d(x, k, up, down, pad)
    got = upfirdn2d(x, k, up=up, down=down, pad=pad)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_stylegan2_resampling_sizes():
    x = torch.randn(1, 4, 8, 8)
    assert upfirdn2d(x, blur_kernel(4.0).float(), up=2, pad=(2, 1)).shape[-2:] == (16, 16)
    assert upfirdn2d(x, blur_kernel().float(), down=2, pad=(1, 1)).shape[-2:] == (4, 4)
    # a constant image stays constant inside the border (kernel gain up² keeps the mean)
    flat = upfirdn2d(torch.ones(1, 1, 8, 8), blur_kernel(4.0).float(), up=2, pad=(2, 1))
    torch.testing.assert_close(flat[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))


def test_kernel_follows_input_dtype_and_channels_stay_separate():
    x = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    x[0, 1, 2, 2] = 1.0  # an impulse in channel 1 only
    out = upfirdn2d(x, blur_kernel().float(), pad=(2, 1))
    assert out.dtype == torch.float64
    assert out[0, 0].abs().max() == 0 and out[0, 1].sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "up,down,pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), ((2, 1), (1, 2), (1, -1, 0, 2))]
)
def test_gradients_first_and_second_order(up, down, pad):
    torch.manual_seed(1)
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 4, dtype=torch.float64)

    def fn(inp):
        return upfirdn2d(inp, k, up=up, down=down, pad=pad)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_bad_arguments_are_refused():
    x = torch.randn(1, 1, 2, 2)
    with pytest.raises(ValueError, match="larger than the padded"):
        upfirdn2d(x, torch.ones(4, 4))
    with pytest.raises(ValueError, match="up must be"):
        upfirdn2d(x, torch.ones(1, 1), up=0)
    with pytest.raises(ValueError, match="pad must have"):
        upfirdn2d(x, torch.ones(1, 1), pad=(1, 1, 1))


def test_fused_leaky_relu_is_bias_then_scaled_leaky_relu():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, 4)
    bias = torch.randn(3)
    pre = x + bias[None, :, None, None]
    want = torch.where(pre >= 0, pre, 0.2 * pre) * math.sqrt(2)
    torch.testing.assert_close(fused_leaky_relu(x, bias), want)
    # dense layers: (B, C) with a (C,) bias
    dense = torch.randn(5, 3)
    torch.testing.assert_close(
        fused_leaky_relu(dense, bias, 0.2, 1.0), F.leaky_relu(dense + bias, 0.2)
    )
    # the slope is honoured (the CUDA kernel's semantics), and bias may be absent
    torch.testing.assert_close(
        fused_leaky_relu(-torch.ones(2, 3), None, 0.1, 2.0), -0.2 * torch.ones(2, 3)
    )


def test_fused_leaky_relu_module_has_reference_parameter_name():
    act = FusedLeakyReLU(3)
    assert [name for name, _ in act.named_parameters()] == ["bias"]
    assert act.bias.shape == (3,)
    with torch.no_grad():
        act.bias.copy_(torch.tensor([1.0, -1.0, 0.0]))
    out = act(torch.zeros(1, 3, 1, 1)).flatten()
    torch.testing.assert_close(out, torch.tensor([math.sqrt(2), -0.2 * math.sqrt(2), 0.0]))

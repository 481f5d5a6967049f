"""Pure-PyTorch replacements for the compiled ops of rosinality/stylegan2-pytorch (``op/``).

The reference compiles CUDA extensions at import time, which needs a matching toolchain and
fails on CPU-only machines; these equivalents are written with ordinary (grouped / transposed)
convolutions, so they run anywhere, are fast on CUDA through cuDNN, and differentiate to any
order through autograd.
"""

from lineargan.models.ops.fused_act import FusedLeakyReLU, fused_leaky_relu
from lineargan.models.ops.upfirdn2d import upfirdn2d

__all__ = ["FusedLeakyReLU", "fused_leaky_relu", "upfirdn2d"]

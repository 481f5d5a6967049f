"""Where a generator's image is clamped to [-1, 1]: never in a generator, always before a
segmenter and on the way to a stored or displayed image (``protocols.clamp_image``).

Every adapter is built with random weights of its real architecture (the layouts of the
adapter tests), so pixels beyond ±1 occur; a loss on those pixels must reach the latents,
as SIE's colour loss and SCS through any P that reads the image need.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from lineargan.cache import generate_and_label, to_uint8
from lineargan.extractors.base import upsample
from lineargan.models.protocols import GeneratorAdapter
from lineargan.models.registry import get_generator
from lineargan.models.unet import SegmentationUNet, UNetSegmenter
from lineargan.predictors import SegmenterPredictor
from tests import hook_models
from tests.test_hooked_generator import UNET, save_state
from tests.test_pggan_stylegan import (
    pggan_genforce_state,
    pggan_port_state,
    stylegan_genforce_state,
    stylegan_port_state,
)
from tests.test_stylegan2_genforce import random_state, to_authors_layout
from tests.test_stylegan2_rosinality import random_generator


def _saved(tmp_path: Path, obj) -> str:
    path = tmp_path / "g.pt"
    torch.save(obj, path)
    return str(path)


def _stylegan2_authors(tmp_path: Path) -> GeneratorAdapter:
    state = to_authors_layout(random_state("genforce", seed=0))
    state["truncation.truncation"] = torch.full((1, 8, 1), 0.5)
    return get_generator("stylegan2-lineargan", checkpoint=_saved(tmp_path, state))


BUILDERS: dict[str, Callable[[Path], GeneratorAdapter]] = {
    "pggan-genforce": lambda p: get_generator(
        "pggan-genforce", checkpoint=_saved(p, pggan_genforce_state(0))
    ),
    "pggan-lineargan": lambda p: get_generator(
        "pggan-lineargan", checkpoint=_saved(p, pggan_port_state(pggan_genforce_state(0)))
    ),
    "stylegan-genforce": lambda p: get_generator(
        "stylegan-genforce", checkpoint=_saved(p, stylegan_genforce_state(0))
    ),
    "stylegan-lineargan": lambda p: get_generator(
        "stylegan-lineargan",
        checkpoint=_saved(p, stylegan_port_state(stylegan_genforce_state(0))),
    ),
    "stylegan2-genforce": lambda p: get_generator(
        "stylegan2-genforce", checkpoint=_saved(p, random_state("genforce", seed=0))
    ),
    "stylegan2-lineargan": _stylegan2_authors,
    "stylegan2-rosinality": lambda p: get_generator(
        "stylegan2-rosinality", checkpoint=_saved(p, {"g_ema": random_generator(0).state_dict()})
    ),
    "torch-hooks (denoiser)": lambda p: get_generator(
        "torch-hooks",
        timestep=900,
        checkpoint=str(save_state(p, hook_models.build_unet())),
        **UNET,
    ),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_gradients_flow_through_pixels_beyond_one(tmp_path, name):
    G = BUILDERS[name](tmp_path)
    latents = G.sample_latents(2, seed=1).requires_grad_(True)
    image = G(latents).image
    beyond = image.detach().abs() > 1
    assert beyond.any(), "random weights give pixels beyond ±1"  # else the test proves nothing
    (image * beyond).sum().backward()  # a loss on those pixels only
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    # the stored / displayed image is the clamped one: beyond ±1 saturates at 0 or 255
    u8 = to_uint8(image.detach())
    want = ((image.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert np.array_equal(u8, want.permute(0, 2, 3, 1).numpy())
    assert u8.min() == 0 or u8.max() == 255


def test_segmenter_input_is_clamped_once_in_the_predictor_and_in_the_store(tmp_path):
    torch.manual_seed(0)
    seg = UNetSegmenter(SegmentationUNet(3, width=4, depth=2), ("bg", "a", "b"), "test")
    seen: list[torch.Tensor] = []
    seg.net.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    G = BUILDERS["pggan-genforce"](tmp_path)
    z = G.sample_latents(2, seed=3).requires_grad_(True)
    out = G(z)
    assert (out.image.abs() > 1).any()
    # SCS/SIE's P: the segmenter gets the clamped image, gradients still reach z
    logits = SegmenterPredictor(seg, "UNet")(out, 16)
    assert torch.equal(seen[-1], out.image.detach().clamp(-1, 1))
    with torch.no_grad():
        want = upsample(seg.net(out.image.clamp(-1, 1)), 16)
    torch.testing.assert_close(logits.detach(), want)
    logits.logsumexp(1).mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # the cache: images stored clamped and quantised, labelled from exactly those
    seen.clear()
    with torch.no_grad():
        batch = generate_and_label(G, seg, z.detach().numpy(), torch.device("cpu"))
        raw = G(z.detach()).image
    assert np.array_equal(batch.images, to_uint8(raw))
    assert seen[-1].min() >= -1 and seen[-1].max() <= 1
    assert np.array_equal(batch.labels, seg.segment(batch.images).labels)

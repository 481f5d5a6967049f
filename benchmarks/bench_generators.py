"""The paper's generator on this machine: StyleGAN2 (rosinality layout, random weights, channel
multiplier 2, as the FFHQ and LSUN models) at 256 and 1024 px, measured side by side.

Per resolution it prints, for one batch:

- the generator forward in float32 vs bfloat16 autocast (``generator_precision``);
- the full forward vs ``forward_features`` stopped after the first half of the layers (what a
  regenerate-policy fit of the early layers pays);
- store bytes per image under the policies (all, ``max_resolution`` 256 / 64, regenerate);
- on CUDA, a 64-sample float16 feature batch copied host → device from pageable vs pinned
  memory (what ``ChunkStream(pin_memory=True)`` buys).

Nothing is asserted; the numbers depend on the machine. On CPU use ``--sizes 256`` or be
patient: a 1024-px forward takes tens of seconds per image there.

    .venv/bin/python benchmarks/bench_generators.py --sizes 256 1024 --batch 4
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from lineargan.models.style_latents import StyleLatents
from lineargan.models.stylegan2_rosinality import Generator, StyleGAN2Rosinality
from lineargan.store_policy import StorePolicy


def build(size: int, device: torch.device) -> StyleGAN2Rosinality:
    torch.manual_seed(0)
    g = Generator(size, style_dim=512, n_mlp=8, channel_multiplier=2)
    style = StyleLatents("trunc-wp", 512, 512, g.n_latent, 0.5, 18)
    return StyleGAN2Rosinality(g, style, torch.zeros(512)).eval().to(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best of ``repeats`` wall times (after one warm-up call), synchronising CUDA."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def copy_rates(shapes: list[tuple[int, int, int]], device: torch.device) -> tuple[float, float]:
    """GB/s of one 64-sample float16 batch, pageable vs pinned, host → device."""
    pageable = [torch.randn(64, *s).half() for s in shapes]
    pinned = [t.pin_memory() for t in pageable]
    size = sum(t.numel() * 2 for t in pageable) / 1e9

    def copy(ts: list[torch.Tensor]) -> Callable[[], object]:
        return lambda: [t.to(device, non_blocking=True) for t in ts]

    return size / timed(copy(pageable), device, 5), size / timed(copy(pinned), device, 5)


@torch.inference_mode()
def bench(size: int, batch: int, repeats: int, device: torch.device) -> list[str]:
    g = build(size, device)
    z = g.sample_latents(batch, seed=0).to(device)
    half = list(range(len(g.layer_names) // 2))
    fp32 = timed(lambda: g(z), device, repeats)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        bf16 = timed(lambda: g(z), device, repeats)
    early = timed(lambda: g.forward_features(z, half), device, repeats)
    shapes = g.layer_shapes()
    rows = [
        f"| {size} | float32 forward | {fp32 / batch * 1e3:.1f} ms/image | 1.00 |",
        f"| {size} | bfloat16 autocast forward | {bf16 / batch * 1e3:.1f} ms/image "
        f"| {fp32 / bf16:.2f}x faster |",
        f"| {size} | forward_features, first {len(half)} of {len(shapes)} layers "
        f"| {early / batch * 1e3:.1f} ms/image | {fp32 / early:.2f}x faster |",
    ]
    for text, policy in (
        ("all features", StorePolicy()),
        ("max_resolution 256", StorePolicy(max_resolution=256)),
        ("max_resolution 64", StorePolicy(max_resolution=64)),
        ("regenerate", StorePolicy(features="regenerate")),
    ):
        served = policy.served(g.layer_names, shapes)[1]
        mb = policy.bytes_per_sample(size, g.latent_dim, served) / 1e6
        rows.append(f"| {size} | store bytes, {text} | {mb:.2f} MB/image | |")
    if device.type == "cuda":
        pageable, pinned = copy_rates(shapes[: len(half)], device)
        rows.append(
            f"| {size} | H2D copy of 64 samples' features | pageable {pageable:.1f} GB/s, "
            f"pinned {pinned:.1f} GB/s | {pinned / pageable:.2f}x |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"StyleGAN2 (rosinality, random weights), batch {args.batch}, on {name}")
    print("| px | what | measured | ratio |\n|---|---|---|---|")
    for size in args.sizes:
        for row in bench(size, args.batch, args.repeats, device):
            print(row, flush=True)


if __name__ == "__main__":
    main()

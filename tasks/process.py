"""How a process that runs pipeline steps is set up for compute: torch threads and the C
allocator.

Both settings are per process and must hold wherever a step runs (the flow's own process, a
LocalCluster worker, a worker of a cluster the user started), so every step calls
:func:`tune_process` on entry; it is idempotent and cheap.

The allocator. Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting any
glibc malloc threshold switches off glibc's dynamic mmap threshold, which then stays at 128 KiB:
every tensor above that size is a fresh ``mmap`` whose pages the kernel zero-fills on first
touch, and is unmapped again when freed. A fit allocates the same activation-sized tensors on
every step, so a worker spends more time in page faults than in arithmetic (measured on the
quick profile's NSE-1 fit: 33 s of kernel time against 24 s of user time for 100 steps, 15 M
minor faults; 1.7 s and 0.2 M with the thresholds below). Raising the mmap threshold to glibc's
maximum and keeping freed memory up to a trim threshold lets steps reuse the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

import torch

# mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20


def tune_process() -> None:
    """Honour LINEARGAN_TORCH_THREADS (parallel workers must not oversubscribe the cores) and
    keep the C allocator from returning every large block to the kernel (module doc)."""
    n = int(os.environ.get("LINEARGAN_TORCH_THREADS", "0") or 0)
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    tune_allocator()
    bind_worker_gpu()


def bind_worker_gpu() -> int | None:
    """Make worker i of a local Dask cluster use card i (of those it sees), so the one worker
    per GPU that ``flows.runner`` starts never shares a card; "cuda" then means that card.
    Returns the card chosen (None outside a Dask worker, or without several GPUs)."""
    count = torch.cuda.device_count()
    if count < 2:
        return None
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    if not isinstance(name, int) and not str(name).isdigit():
        return None
    card = int(name) % count
    torch.cuda.set_device(card)
    return card


@cache
def tune_allocator() -> bool:
    """Set glibc's mmap and trim thresholds once per process; False where there is no glibc
    (macOS, musl) or ``LINEARGAN_MALLOC_TUNING=0`` asks to leave the allocator alone."""
    if os.environ.get("LINEARGAN_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok

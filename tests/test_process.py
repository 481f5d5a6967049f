"""The compute-process set-up: a worker started the way Dask's nanny starts it must not fault
in fresh pages for every large tensor."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tasks.process import tune_allocator

# Allocate and free activation-sized tensors (4 MiB) the way a fit step does; print the minor
# page faults it caused before and after tune_process().
_CHURN = """
import resource, torch
from tasks.process import tune_process

def faults():
    torch.set_num_threads(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        x = torch.empty(1 << 20)
        x.fill_(1.0)
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

untuned = faults()
tune_process()
print(untuned, faults())
"""


@pytest.mark.skipif(not tune_allocator(), reason="needs glibc")
def test_tuned_allocator_reuses_memory_under_dasks_trim_threshold():
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536", "LINEARGAN_TORCH_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHURN], env=env, capture_output=True, text=True, check=True
    )
    untuned, tuned = map(int, out.stdout.split())
    # untuned: every 4 MiB tensor is a fresh mapping (~1,000 faults each)
    assert untuned > 100_000
    assert tuned < untuned / 20


def test_tuning_can_be_switched_off():
    env = {**os.environ, "LINEARGAN_MALLOC_TUNING": "0"}
    code = "from tasks.process import tune_allocator; print(tune_allocator())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"

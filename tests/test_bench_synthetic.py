"""The summary the README's synthetic-training table is read from
(``benchmarks/bench_synthetic_training.py``): per-condition means and the paired differences."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_synthetic_training import paired_differences, summary  # noqa: E402


def _rows() -> pd.DataFrame:
    miou = {  # (shots, condition): per repeat 0, 1, 2
        (8, "annotated"): (0.20, 0.30, 0.25),
        (8, "lse"): (0.22, 0.35, 0.24),
        (8, "lse-filtered"): (0.30, 0.36, 0.33),
        (0, "reference"): (0.50, 0.60, 0.55),
    }
    return pd.DataFrame(
        [
            {"shots": n, "repeat": r, "condition": c, "miou": v}
            for (n, c), values in miou.items()
            for r, v in enumerate(values)
        ]
    )


def test_differences_are_paired_by_repeat():
    diffs = paired_differences(_rows()).set_index(["shots", "better", "worse"])
    # filtered - annotated = +10, +6, +8 points: mean 8, sd 2, t(2) = 4.303 → ± 4.97
    row = diffs.loc[(8, "lse-filtered", "annotated")]
    assert row["mean"] == pytest.approx(0.08) and row["half"] == pytest.approx(0.0497, abs=1e-4)
    assert (row["pairs"], row["positive"]) == (3, 3)
    # lse - annotated = +2, +5, -1: one of three below
    assert diffs.loc[(8, "lse", "annotated"), "positive"] == 2
    # the reference (trained once per repeat, shots 0) is paired with each N's filtered export
    assert diffs.loc[(8, "reference", "lse-filtered"), "mean"] == pytest.approx(0.22)


def test_summary_prints_means_and_differences():
    text = summary(_rows())
    assert "25.0 ± " in text and "20.0, 30.0, 25.0" in text
    assert "+8.0 ± 5.0  3/3" in text
    # one repeat: no interval, the difference is still printed
    assert "+10.0 ± nan  1/1" in summary(_rows()[lambda d: d.repeat == 0])

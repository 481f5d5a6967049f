"""Table 1's numbers from per-class IoU rows, checked against values worked out by hand:
mIoU over counted classes only, and Appx D's difference relative to the best of each pair."""

from __future__ import annotations

import pandas as pd
import pytest

from lineargan.render import table1_summary

WILD = 1000.0  # an IoU no real class can have: any mean that includes it is far off


def rows(generator: str, extractor: str, ious: list[float], uncounted: int = 0) -> list[dict]:
    """Per-class rows of one fit: the given IoUs (each class seen in 10 images), then
    ``uncounted`` classes that never appeared (images == 0) carrying the WILD value."""
    base = {"generator": generator, "segmenter": "seg", "extractor": extractor}
    base["fit_key"] = f"{generator}-{extractor}"
    counted = [{**base, "class_index": k, "iou": v, "images": 10} for k, v in enumerate(ious)]
    never = [
        {**base, "class_index": len(ious) + k, "iou": WILD, "images": 0} for k in range(uncounted)
    ]
    return counted + never


@pytest.fixture
def summary() -> pd.DataFrame:
    iou = pd.DataFrame(
        # model pair g1: NSE-1 is best (0.5); LSE 0.4 → −20 %; NSE-2 0.25 → −50 %
        rows("g1", "NSE-2", [0.125, 0.375])
        + rows("g1", "LSE", [0.2, 0.6], uncounted=1)
        + rows("g1", "NSE-1", [0.5, 0.5], uncounted=2)
        # model pair g2: LSE is best (0.8); NSE-1 0.4 → −50 % (its own best, not g1's)
        + rows("g2", "NSE-1", [0.4, 0.4])
        + rows("g2", "LSE", [0.8, 0.8], uncounted=1)
    ).sample(frac=1.0, random_state=3)  # input order must not matter
    return table1_summary(iou)


def test_rows_are_one_per_fit_in_table_order(summary):
    assert list(zip(summary.generator, summary.extractor, strict=True)) == [
        ("g1", "LSE"),
        ("g1", "NSE-1"),
        ("g1", "NSE-2"),
        ("g2", "LSE"),
        ("g2", "NSE-1"),
    ]
    assert summary.fit_key.tolist() == ["g1-LSE", "g1-NSE-1", "g1-NSE-2", "g2-LSE", "g2-NSE-1"]
    assert (summary.segmenter == "seg").all()


def test_miou_excludes_classes_never_counted(summary):
    # with the WILD classes included these would be (0.2 + 0.6 + 1000) / 3, ... instead
    assert summary.miou.tolist() == pytest.approx([0.4, 0.5, 0.25, 0.8, 0.4], abs=1e-12)


def test_rel_diff_is_relative_to_the_best_of_the_same_pair(summary):
    keys = zip(summary.generator, summary.extractor, strict=True)
    rel = dict(zip(keys, summary.rel_diff, strict=True))
    assert rel[("g1", "LSE")] == pytest.approx(-0.2, abs=1e-12)  # (0.4 − 0.5) / 0.5
    assert rel[("g1", "NSE-2")] == pytest.approx(-0.5, abs=1e-12)  # (0.25 − 0.5) / 0.5
    assert rel[("g2", "NSE-1")] == pytest.approx(-0.5, abs=1e-12)  # (0.4 − 0.8) / 0.8
    # the best of each pair is exactly 0 (render_table1 bolds the cell on == 0)
    assert rel[("g1", "NSE-1")] == 0.0
    assert rel[("g2", "LSE")] == 0.0

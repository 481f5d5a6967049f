"""Choose the baseline UNet's settings on the training store's held-out part.

SCS and SIE draw their targets from the evaluation split, so the UNet's settings (learning
rate, class-weight power, steps, ...) must never be chosen there. This script fits the UNet
once per candidate (each a set of ``UNetParams`` overrides of the profile's defaults) on the
training store minus its held-out part (``UNetParams.holdout``), ranks the candidates by their
mIoU on that held-out part, and prints the evaluation-split mIoU beside it for information
only (it chooses nothing). Fits are the analyses' own (``tasks.baseline.unet_or_reuse``), so
rerunning reuses them and the chosen one is the checkpoint a run would train::

    .venv/bin/python benchmarks/unet_settings.py --profile quick \\
        --train DATA/stores/dcgan-digiface__dlib-face68/train-seed0-n2048.zarr \\
        --eval DATA/stores/dcgan-digiface__dlib-face68/eval-seed1-n512.zarr \\
        --results /tmp/unet-settings '{}' '{"lr": 1e-3}' '{"class_balance": 0.5}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: this checkout's code, not an installed one
    sys.path.insert(0, str(ROOT))

from lineargan.baseline import UNetParams  # noqa: E402
from lineargan.config import RunConfig  # noqa: E402
from storage.feature_store import FeatureStore  # noqa: E402
from storage.target import Target  # noqa: E402
from tasks.baseline import evaluate_segmenter, unet_or_reuse  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", choices=("smoke", "quick", "paper"))
    parser.add_argument("--train", required=True, help="training store (its held-out part chooses)")
    parser.add_argument("--eval", help="evaluation store (reported only, never chooses)")
    parser.add_argument("--results", required=True, help="where the fits are written/reused")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("candidates", nargs="+", help="JSON UNetParams overrides, one each")
    args = parser.parse_args()

    base = UNetParams.for_run(RunConfig(profile=args.profile))
    train = FeatureStore.open(Target(args.train))
    evals = FeatureStore.open(Target(args.eval)) if args.eval else None
    rows = []
    for text in args.candidates:
        params = UNetParams(**{**base.model_dump(), **json.loads(text)})  # typos fail here
        segmenter, meta = unet_or_reuse(train, args.train, params, args.results, args.device)
        row = {
            "candidate": text,
            "n_train": meta["n_train"],
            "holdout": meta.get("holdout_images"),
            "holdout_miou": meta.get("holdout_miou", float("nan")),
            "holdout_miou_detected": meta.get("holdout_miou_detected", float("nan")),
            "seconds": meta["train_seconds"],
        }
        if evals is not None:
            scores = evaluate_segmenter(segmenter, evals, args.device)
            row |= {"eval_miou": scores["all"].miou, "eval_miou_detected": scores["detected"].miou}
        rows.append(row)
        print(json.dumps(row), flush=True)
    ranked = sorted(rows, key=lambda r: -r["holdout_miou"])
    print("ranked by held-out mIoU (the choice); eval mIoU is reported only:")
    for r in ranked:
        shown = f"  eval {100 * r['eval_miou']:.1f} %" if "eval_miou" in r else ""
        print(f"  {100 * r['holdout_miou']:.1f} %  {r['candidate']}{shown}")


if __name__ == "__main__":
    main()

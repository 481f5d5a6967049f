"""Are exported datasets worth training on? DatasetGAN's protocol on the default models.

Run from the repository root after a quick-profile run (its stores and few-shot fits)::

    .venv/bin/python benchmarks/bench_synthetic_training.py \\
        --results-root results --out bench-synthetic.parquet

For each N ∈ ``--shots`` and repeat r < ``--repeats`` (the few-shot analysis's fit
``fewshot-n<N>-r<r>-<variant>-<key>``, trained on N annotated images of the training store:
by default the converged ridge LSE, the project's best few-shot labeller), the
baseline UNet (``lineargan/baseline.py``, the same steps, batch and seed r everywhere) is
trained on:

(a) ``annotated``: the N annotated images with their reference labels, alone;
(b) ``lse``: K images exported with that LSE (``tasks.export.run_export``, seed r), labelled
    by it; ``lse-filtered``: the K most confident of 2K exported images (keep fraction 0.5,
    mean max-softmax);
(c) ``reference``: the same K images as (b), labelled by the reference segmenter (the upper
    bound; it does not depend on N, so it is trained once per repeat).

Each UNet is scored with mIoU (Appx A) against the reference labels of the held-out
evaluation store. Rows go to ``--out`` (Parquet: shots, repeat, condition, k, miou,
miou_detected, seconds); the summary prints mean ± the 95 % t-interval over repeats.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from lineargan.baseline import UNetParams, UNetTraining, build_unet  # noqa: E402
from lineargan.driver import drive  # noqa: E402
from lineargan.models.unet import UNetSegmenter  # noqa: E402
from lineargan.synthetic import ExportConfig, mean_interval  # noqa: E402
from storage.checkpoints import read_config  # noqa: E402
from storage.feature_store import FeatureStore  # noqa: E402
from storage.target import Target  # noqa: E402
from tasks.baseline import evaluate_segmenter  # noqa: E402
from tasks.export import run_export  # noqa: E402
from tasks.store_models import store_segmenter  # noqa: E402

KEY = ["shots", "repeat", "condition"]  # one UNet: reference rows have shots 0


def find_fit(results_root: str, shots: int, repeat: int, variant: str) -> str:
    """The few-shot analysis's fit of ``shots`` images, repeat ``repeat``: ``variant`` names
    it (``converged-ridge1e-03``: the converged ridge LSE; "": the paper schedule's)."""
    middle = f"-{variant}" if variant else ""
    pattern = re.compile(rf"fewshot-n{shots}-r{repeat}{re.escape(middle)}-[0-9a-f]{{16}}$")
    found = [p for p in sorted((Path(results_root) / "fits").iterdir()) if pattern.match(p.name)]
    if not found:
        raise SystemExit(
            f"no fit fewshot-n{shots}-r{repeat}{middle}-<key> under {results_root}/fits"
        )
    return str(found[0])


def read_export(root: str, ids: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Images (K, H, W, 3) and masks (K, H, W) of the index rows ``ids``."""
    images = np.stack([np.array(Image.open(f"{root}/{f}").convert("RGB")) for f in ids.file_name])
    masks = np.stack([np.array(Image.open(f"{root}/{f}")) for f in ids.mask_file_name])
    return images, masks


def train_and_score(
    images: np.ndarray, labels: np.ndarray, params: UNetParams, eval_store: FeatureStore
) -> dict:
    start = time.perf_counter()
    class_names = eval_store.spec.class_names
    net = build_unet(len(class_names), params)
    drive(UNetTraining(net, images, labels, params, torch.device("cpu")))
    scores = evaluate_segmenter(UNetSegmenter(net, class_names, "bench"), eval_store, "cpu")
    return {
        "miou": scores["all"].miou,
        "miou_detected": scores["detected"].miou,
        "train_images": len(images),
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results-root", default=str(ROOT / "results"))
    ap.add_argument("--shots", default="8,16")
    ap.add_argument(
        "--fit-variant",
        default="converged-ridge1e-03",
        help="which few-shot fits label: converged-ridge1e-03 (the ridge LSE, λ the held-out "
        "choice for N = 8 and 16 on the quick profile) or '' (the paper schedule's)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=1024, help="synthetic training images")
    ap.add_argument("--steps", type=int, default=800, help="UNet steps (every condition)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default="bench-synthetic.parquet")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shots = [int(s) for s in args.shots.split(",")]
    # rows of an earlier (partial) run with the same --out are kept: its finished (N, repeat)
    # pairs are not trained again, so more repeats can be added later
    # (a run stopped between two UNets of one (N, repeat) exports it again and trains only the
    # missing conditions; rows a bench before this rule trained twice are read back once)
    rows: list[dict] = (
        pd.read_parquet(args.out).drop_duplicates(KEY).to_dict("records")
        if Path(args.out).exists()
        else []
    )
    done = {tuple(row[k] for k in KEY) for row in rows}
    work = tempfile.mkdtemp(prefix="bench-synthetic-")
    eval_store = None
    for r in range(args.repeats):
        params = UNetParams(steps=args.steps, batch=args.batch, seed=r)
        for n in shots:
            wanted = {(n, r, c) for c in ("annotated", "lse", "lse-filtered")}
            if n == shots[0]:
                wanted.add((0, r, "reference"))
            if wanted <= done:
                continue
            fit = find_fit(args.results_root, n, r, args.fit_variant)
            meta = read_config(fit, "extractor")["metadata"]
            train = FeatureStore.open(Target(meta["train_store"]))
            if eval_store is None:
                eval_store = FeatureStore.open(Target(eval_beside(meta["train_store"])))
            out = f"{work}/n{n}-r{r}"
            cfg = ExportConfig(
                fit=fit, n_images=2 * args.k, out=out, seed=r, keep_fraction=0.5, device="cpu"
            )
            run_export(cfg)
            index = pd.read_parquet(f"{out}/metadata.parquet")
            first = index[index.id < args.k]
            kept = index[index.kept]
            batch = train.read_selection(np.asarray(meta["train_indices"]), images=True)
            conditions = {"annotated": (batch.images, batch.labels)}
            conditions["lse"] = read_export(out, first)
            conditions["lse-filtered"] = read_export(out, kept)
            if n == shots[0]:  # the same K images for every N of this repeat (seed r)
                images = conditions["lse"][0]
                reference = store_segmenter(train).segment(images).labels
                conditions["reference"] = (images, reference)
            for name, (x, y) in conditions.items():
                row = {"shots": n if name != "reference" else 0, "repeat": r, "condition": name}
                if tuple(row.values()) in done:
                    continue
                score = train_and_score(x, y, params, eval_store)
                rows.append({**row, "k": args.k, **score})
                print(
                    f"N={n} r={r} {name:>13}: mIoU {100 * score['miou']:.1f} % "
                    f"({score['train_images']} images, {score['seconds']:.0f} s)",
                    flush=True,
                )
                pd.DataFrame(rows).to_parquet(
                    args.out
                )  # after every UNet: a partial run keeps its rows
    shutil.rmtree(work, ignore_errors=True)  # the exports (the rows are in --out)
    print(summary(pd.DataFrame(rows)))
    return 0


# paired differences the README reports: (better, worse) conditions of the same (N, repeat)
PAIRS = (
    ("lse-filtered", "annotated"),
    ("lse", "annotated"),
    ("lse-filtered", "lse"),
    ("reference", "lse-filtered"),
)


def paired_differences(frame: pd.DataFrame) -> pd.DataFrame:
    """Per N and pair of ``PAIRS``: the difference of the two conditions' mIoU within each
    repeat (the same UNet seed and, for the exports, the same latents, so a repeat's shared
    difficulty cancels), its mean, the 95 % t-interval's half-width and how many are > 0."""
    grid = frame.pivot_table(index=["shots", "repeat"], columns="condition", values="miou")
    reference = grid.loc[0, "reference"] if 0 in grid.index.get_level_values(0) else None
    out = []
    for n in sorted(set(frame.shots) - {0}):
        at_n = grid.loc[n]
        if reference is not None:  # trained once per repeat: paired with every N
            at_n = at_n.assign(reference=reference.reindex(at_n.index))
        for better, worse in PAIRS:
            if better not in at_n or worse not in at_n:
                continue
            diff = (at_n[better] - at_n[worse]).dropna().to_numpy()
            if diff.size:
                mean, half = mean_interval(diff)
                row = {"shots": n, "better": better, "worse": worse, "pairs": diff.size}
                out.append({**row, "mean": mean, "half": half, "positive": int((diff > 0).sum())})
    return pd.DataFrame(out)


def summary(frame: pd.DataFrame) -> str:
    """Each condition's mean mIoU ± the 95 % t-interval over repeats, then the paired
    differences, the numbers the README's table reports."""
    lines = ["condition      N   repeats  mIoU % (95 % t-interval)  per repeat"]
    for (name, n), group in frame.groupby(["condition", "shots"], sort=False):
        mean, half = mean_interval(group.miou.to_numpy())
        each = ", ".join(f"{100 * v:.1f}" for v in group.sort_values("repeat").miou)
        lines.append(
            f"{name:>13} {n:>3} {len(group):>6}   {100 * mean:.1f} ± {100 * half:.1f}  {each}"
        )
    lines.append("\npaired difference           N  pairs  points (95 % t-interval)  positive")
    for d in paired_differences(frame).itertuples():
        lines.append(
            f"{d.better + ' - ' + d.worse:>26} {d.shots:>3} {d.pairs:>5}   "
            f"{100 * d.mean:+.1f} ± {100 * d.half:.1f}  {d.positive}/{d.pairs}"
        )
    return "\n".join(lines)


def eval_beside(train_url: str) -> str:
    """The run's evaluation store, beside its training store (``eval-seed<s>-n<n>.zarr``)."""
    found = sorted(Path(train_url).parent.glob("eval-*.zarr"))
    if len(found) != 1:
        raise SystemExit(f"need one eval-*.zarr beside {train_url}, found {found}")
    return str(found[0])


if __name__ == "__main__":
    sys.exit(main())

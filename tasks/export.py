"""Exporting a labelled synthetic dataset: a saved fit labels N images of its generator.

The steps of ``python -m flows.export`` as plain functions (tests and the benchmark call
them; the flow fans :func:`export_shard` out on Dask): :func:`plan_export` resolves the fit
and checks the export root, :func:`prepare_export` creates or reopens the export and lists the
shards still to write, :func:`export_shard` generates, labels and writes one shard, and
:func:`finalize_export` writes the index with the quality filter. Memory per worker is one
shard's images, whatever N is: nothing is accumulated across shards but the index rows
(a few numbers per image, read back from the parts at the end).
"""

from __future__ import annotations

import functools
import io
import math
import posixpath
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from lineargan.cache import generator_batch, generator_precision, to_uint8
from lineargan.device import resolve_device
from lineargan.errors import CheckpointError, LinearGanError
from lineargan.masks import MaskInfo
from lineargan.models import GeneratorAdapter
from lineargan.models.protocols import GeneratorOutput
from lineargan.models.registry import cached_generator
from lineargan.paths import default_results_root
from lineargan.predictors import ExtractorPredictor, freeze
from lineargan.synthetic import (
    ExportConfig,
    class_areas,
    confidence,
    ensemble_uncertainty,
    keep_most_confident,
    latent_seed,
    repeat_siblings,
)
from storage.checkpoints import load_extractor, read_config
from storage.dataset_export import (
    ExportLayout,
    iter_parts,
    open_export,
    read_spec,
    write_index,
    write_shard,
)
from storage.target import Target
from tasks.feature_source import FeatureSource
from tasks.process import tune_process
from tasks.store_models import store_generator


@dataclass(frozen=True)
class ExportPlan:
    """A checked export: where it goes and what labels it (``members``: the fit directory,
    or every repeat of it for the ensemble measure, the given fit first)."""

    root: str
    members: tuple[str, ...]
    spec: dict


def resolve_fit(fit: str, results_root: str) -> str:
    """The directory of fit ``fit``: a path or URL as given, else the directory under
    ``<results_root>/fits`` of that name, or the one whose name starts with it."""
    if "/" in fit:
        return Target(fit).location
    fits = Target(results_root) / "fits"
    names = _fit_names(fits)
    if fit in names:
        return (fits / fit).location
    matches = [n for n in names if n.startswith(fit)]
    if len(matches) == 1:
        return (fits / matches[0]).location
    if not matches:
        hint = ", ".join(names[:4]) + (" …" if len(names) > 4 else "") if names else "none"
        raise LinearGanError(
            f"no fit {fit!r} under {fits.url} (fits there: {hint})",
            "pass a fit directory's name (ls <results_root>/fits) or its path; run "
            "`python -m flows.reproduce` first to make fits",
        )
    raise LinearGanError(
        f"{len(matches)} fits under {fits.url} start with {fit!r} ({', '.join(matches[:4])} …)",
        "pass the whole directory name",
    )


def _fit_names(fits: Target) -> list[str]:
    if not fits.exists():
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fits.fs.ls(fits.path, detail=False))


def plan_export(cfg: ExportConfig) -> ExportPlan:
    """Resolve and read the fit (and its repeats for the ensemble measure), and name the
    export root; a missing or unreadable fit is one line. Loads no model."""
    results_root = cfg.results_root or default_results_root()
    fit_dir = resolve_fit(cfg.fit, results_root)
    meta = read_config(fit_dir, "extractor").get("metadata", {})
    for field in ("generator", "generator_sha256", "class_names"):
        if field not in meta:
            raise CheckpointError(
                f"the fit in {fit_dir} does not record its {field}",
                "export from a fit made by flows.reproduce or lineargan-edit train-fewshot",
            )
    members = (fit_dir,)
    name = fit_dir.rstrip("/").rsplit("/", 1)[-1]
    if cfg.confidence == "ensemble":
        parent = posixpath.dirname(fit_dir.rstrip("/"))
        siblings = repeat_siblings(name, _fit_names(Target(parent)))
        members = (fit_dir,) + tuple(
            posixpath.join(parent, s)
            for s in siblings
            if s != name and _same_labels(posixpath.join(parent, s), meta)
        )
        if len(members) < 2:
            raise LinearGanError(
                f"confidence 'ensemble' needs repeats of the few-shot fit {name}; none found "
                f"beside it in {parent}",
                "run the few-shot analysis with repeats ≥ 2 (its fits are fewshot-n<N>-r<k>-…), "
                "or use --confidence max_softmax",
            )
    root = (
        cfg.out
        or (
            Target(results_root) / "exports" / f"{name}-seed{cfg.seed}"
            + ("-ensemble" if cfg.confidence == "ensemble" else "")
        ).location
    )
    spec = {
        "fit": fit_dir,
        "fit_key": meta.get("fit_key", name),
        "ensemble": [m.rstrip("/").rsplit("/", 1)[-1] for m in members[1:]],
        "extractor": meta.get("extractor", ""),
        "generator": meta["generator"],
        "generator_sha256": meta["generator_sha256"],
        "class_names": list(meta["class_names"]),
        "seed": cfg.seed,
        "shard_size": cfg.shard_size,
        "latents": "image i: generator.sample_latents(1, latent_seed) (column latent_seed)",
    }
    return ExportPlan(root=root, members=members, spec=spec)


def _same_labels(fit_dir: str, meta: dict) -> bool:
    """Whether a repeat labels the same classes on the same generator's features."""
    try:
        other = read_config(fit_dir, "extractor").get("metadata", {})
    except CheckpointError:
        return False  # an unfinished repeat: not a member
    keys = ("generator_sha256", "class_names", "train_store", "store_policy")
    return all(other.get(k) == meta.get(k) for k in keys)


def prepare_export(cfg: ExportConfig) -> tuple[str, list[int]]:
    """Create or reopen the export; returns (root, shards still to write). A shard whose
    part holds fewer images than this N asks (the short last shard of a smaller export) is
    written again with its full complement; every other finished shard is left alone."""
    plan = plan_export(cfg)
    layout = open_export(plan.root, plan.spec)
    done = layout.finished_shards()
    pending = []
    for shard in range(cfg.n_shards()):
        if shard in done and _part_rows(layout, shard) >= len(cfg.shard_ids(shard)):
            continue
        pending.append(shard)
    return plan.root, pending


def _part_rows(layout: ExportLayout, shard: int) -> int:
    with layout.part(shard).fs.open(layout.part(shard).path, "rb") as fh:
        return pq.ParquetFile(fh).metadata.num_rows


@dataclass
class Labeller:
    """A fit's generator and extractor(s), loaded once per process."""

    generator: GeneratorAdapter
    predictors: list[ExtractorPredictor]
    class_names: tuple[str, ...]
    precision: str

    @torch.no_grad()
    def label(self, latents: torch.Tensor, measure: str) -> dict[str, np.ndarray]:
        """Images (B, H, W, 3) uint8, masks (B, H, W) uint8, confidence (B,) and, for the
        ensemble, uncertainty (B,) of ``latents``, ``generator_batch`` latents per pass."""
        g = self.generator
        device = next(g.parameters()).device
        step = generator_batch(g.resolution)
        out: dict[str, list[np.ndarray]] = {"images": [], "masks": [], "confidence": []}
        if measure == "ensemble":
            out["uncertainty"] = []
        for start in range(0, len(latents), step):
            with generator_precision(device, self.precision):
                result = g(latents[start : start + step].to(device))
            # the fit read float16 features from its store: read them as it did
            feats = [f.to(torch.float16).float() for f in result.features]
            seen = GeneratorOutput(result.image, feats)
            probs = [p(seen, g.resolution).float().softmax(1) for p in self.predictors]
            mean = torch.stack(probs).mean(0)
            out["images"].append(to_uint8(result.image.float()))
            out["masks"].append(mean.argmax(1).to(torch.uint8).cpu().numpy())
            if measure == "ensemble":
                unc = ensemble_uncertainty(probs)
                out["uncertainty"].append(unc.cpu().numpy())
                out["confidence"].append((1 - unc / math.log(len(probs))).cpu().numpy())
            else:
                out["confidence"].append(confidence(mean, measure).cpu().numpy())  # type: ignore[arg-type]
        return {k: np.concatenate(v) for k, v in out.items()}


@functools.lru_cache(maxsize=4)
def load_labeller(members: tuple[str, ...], device: str) -> Labeller:
    """The generator that made the fit's training store (same weights, options, policy and
    precision) and the fit's extractors on ``device``; a fit trained from masks without a
    store (``lineargan-edit train-fewshot``) gets its generator by name, its weights checked."""
    dev = resolve_device(device)
    meta = read_config(members[0], "extractor").get("metadata", {})
    precision = "float32"
    if meta.get("train_store"):
        store = FeatureSource.open(Target(meta["train_store"]))
        generator = freeze(store_generator(store, device=str(dev)))
        precision = store.spec.generator_precision
        predictors = [ExtractorPredictor(freeze(load_extractor(m, dev)[0]), "LSE") for m in members]
    else:
        from tasks.editing import load_lse  # the mask-trained LSE's own checks and layer view

        generator = freeze(cached_generator(meta["generator"], str(dev)))
        predictors = [load_lse(m, generator)[0] for m in members]
    if generator.weights_sha256 != meta["generator_sha256"]:
        raise LinearGanError(
            f"the fit in {members[0]} was trained on other {meta['generator']} weights than "
            "the ones its store loads now",
            "restore the generator checkpoint the fit was trained with",
        )
    return Labeller(generator, predictors, tuple(meta["class_names"]), precision)


def shard_latents(
    generator: GeneratorAdapter, seed: int, ids: range
) -> tuple[torch.Tensor, list[int]]:
    """Each image's own latent (:func:`~lineargan.synthetic.latent_seed`) and its seed."""
    seeds = [latent_seed(seed, i) for i in ids]
    return torch.cat([generator.sample_latents(1, s) for s in seeds]), seeds


def export_shard(cfg: ExportConfig, root: str, shard: int) -> bool:
    """Generate, label and write shard ``shard`` (skipped when finished with all its images);
    True when written."""
    layout = ExportLayout(root)
    ids = cfg.shard_ids(shard)
    if layout.is_finished(shard) and _part_rows(layout, shard) >= len(ids):
        return False
    tune_process()
    spec = read_spec(root)
    plan = plan_export(cfg)
    labeller = load_labeller(plan.members, cfg.device)
    g = labeller.generator
    latents, seeds = shard_latents(g, spec["seed"], ids)
    labelled = labeller.label(latents, cfg.confidence)
    n_class = len(labeller.class_names)
    areas = class_areas(labelled["masks"], n_class)
    rows = pd.DataFrame(
        {
            "id": np.asarray(ids, np.int64),
            "shard": np.full(len(ids), shard, np.int32),
            "latent_seed": np.asarray(seeds, np.int64),
            **{f"area_{c}": areas[:, k] for k, c in enumerate(labeller.class_names)},
            "confidence": labelled["confidence"].astype(np.float32),
            **(
                {"uncertainty": labelled["uncertainty"].astype(np.float32)}
                if "uncertainty" in labelled
                else {}
            ),
        }
    )
    info = MaskInfo(labeller.class_names, g.name, g.weights_sha256)
    write_shard(layout, shard, rows, labelled["images"], labelled["masks"], latents.numpy(), info)
    return True


def finalize_export(cfg: ExportConfig, root: str) -> dict:
    """The index of the export's first N images (every shard must be finished) with the
    filter's ``kept`` column, and the README; returns a summary."""
    layout = ExportLayout(root)
    shards = list(range(cfg.n_shards()))
    missing = [s for s in shards if not layout.is_finished(s)]
    if missing:
        raise LinearGanError(
            f"export {root} misses shards {missing[:8]}", "rerun the export: it resumes"
        )
    index = pd.concat(list(iter_parts(layout, shards)), ignore_index=True)
    index = index[index["id"] < cfg.n_images].sort_values("id", ignore_index=True)
    index["kept"] = keep_most_confident(
        index["confidence"].to_numpy(), cfg.keep_fraction, cfg.min_confidence
    )
    spec = read_spec(root)
    url = write_index(layout, index, dataset_card(spec, cfg, index))
    return {
        "root": root,
        "index": url,
        "images": len(index),
        "kept": int(index["kept"].sum()),
        "shards": len(shards),
        "mean_confidence": float(index["confidence"].mean()),
        "kept_mean_confidence": float(index.loc[index["kept"], "confidence"].mean()),
    }


def dataset_card(spec: dict, cfg: ExportConfig, index: pd.DataFrame) -> str:
    """The README written beside the index: what made the data and how to load it."""
    kept = int(index["kept"].sum())
    members = f" + {len(spec['ensemble'])} repeats (ensemble)" if spec["ensemble"] else ""
    return f"""# Synthetic {spec["generator"]} images labelled by a {spec["extractor"]}

- images: {len(index)} ({kept} kept by the filter: keep_fraction {cfg.keep_fraction}, \
min_confidence {cfg.min_confidence}, confidence measure {cfg.confidence})
- fit: `{spec["fit"]}`{members}
- generator weights sha256: `{spec["generator_sha256"]}`
- classes (mask pixel value = index): {", ".join(f"{k} {c}" for k, c in enumerate(spec["class_names"]))}
  (colours: classes.json)

Files: `data/shard-*/images/<id>.png` (RGB), `data/shard-*/masks/<id>.png` (palette PNG,
pixel = class index), `data/shard-*/latents.npy` (latents in id order), `metadata.parquet`
(the index: id, shard, latent_seed, file_name, mask_file_name, area_<class>, confidence,
kept).

```python
import pandas as pd
from PIL import Image
index = pd.read_parquet("metadata.parquet")
image = Image.open(index.file_name[0]); mask = Image.open(index.mask_file_name[0])

import datasets  # Hugging Face: rows with an `image` and a `mask`
ds = datasets.load_dataset("imagefolder", data_dir=".", split="train").filter(lambda r: r["kept"])
```
"""


def run_export(cfg: ExportConfig) -> dict:
    """The whole export in this process, shard after shard (tests, the benchmark)."""
    root, pending = prepare_export(cfg)
    for shard in pending:
        export_shard(cfg, root, shard)
    return {**finalize_export(cfg, root), "written": len(pending)}


def read_latents(root: str, shard: int) -> np.ndarray:
    """A shard's latents (id order)."""
    return np.load(io.BytesIO(ExportLayout(root).latents(shard).read_bytes()))

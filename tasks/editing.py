"""What a person does with a GAN and a few-shot LSE (Appx G "Usage"), as plain steps.

1. :func:`sample_images`: sample images and save, per image, the PNG, its predicted mask as an
   editable palette PNG and a sidecar JSON with its latent and generator.
2. :func:`train_fewshot_from_masks`: annotate a few of those masks (paint with the palette)
   and train a few-shot LSE on them (the generator recomputes each image's features from the
   latent in its sidecar).
3. :func:`edit_sample`: edit a sample's mask and let SIE find the image that matches it.
4. :func:`sample_for_mask`: draw (or reuse) a mask and let SCS sample images that match it.

``lineargan-edit`` (:mod:`flows.edit`) is the command line over these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lineargan.analyses.fewshot import FixedSamples, fewshot_schedule
from lineargan.analyses.scs import SCSParams, conditional_sample
from lineargan.analyses.sie import SIEParams
from lineargan.cache import render_images
from lineargan.config import FitConfig
from lineargan.device import resolve_device
from lineargan.errors import LinearGanError
from lineargan.extractors import build_extractor
from lineargan.latent_search import optimize_latents, semantic_loss
from lineargan.masks import MaskInfo, load_mask_png, save_mask_png
from lineargan.models import GeneratorAdapter
from lineargan.models.registry import cached_generator
from lineargan.predictors import ExtractorPredictor, freeze
from lineargan.store_policy import StorePolicy
from lineargan.training import fit
from storage.checkpoints import load_extractor, save_extractor
from tasks.process import tune_process

SIDECAR = ".json"
MASK = ".mask.png"


@dataclass(frozen=True)
class Sample:
    """One saved sample: ``<stem>.png``, ``<stem>.mask.png`` and ``<stem>.json``."""

    stem: Path

    @property
    def image(self) -> Path:
        return self.stem.with_name(self.stem.name + ".png")

    @property
    def mask(self) -> Path:
        return self.stem.with_name(self.stem.name + MASK)

    @property
    def sidecar(self) -> Path:
        return self.stem.with_name(self.stem.name + SIDECAR)


def load_generator(
    name: str, checkpoint: str | None, device: str, options: str = "{}"
) -> GeneratorAdapter:
    """Generator ``name`` frozen for latent search; ``options`` is canonical JSON."""
    return freeze(cached_generator(name, str(resolve_device(device)), checkpoint, options))


def load_lse(lse_dir: str, generator: GeneratorAdapter) -> tuple[ExtractorPredictor, dict]:
    """A saved LSE as a predictor, refused if it was trained on another generator."""
    device = next(generator.parameters()).device
    if not (Path(lse_dir) / "config.json").exists():
        raise LinearGanError(
            f"no trained LSE in {lse_dir}",
            "train one with `lineargan-edit train-fewshot`, or pass a fit directory of a "
            "reproduce run (results/fits/fewshot-n8-r0-converged-…)",
        )
    model, meta = load_extractor(lse_dir, device)
    sha = meta.get("generator_sha256")
    if sha and sha != generator.weights_sha256:
        raise LinearGanError(
            f"the extractor in {lse_dir} was trained on another generator ({meta.get('generator')}"
            f", weights {sha[:12]}…)",
            "use an extractor trained on this generator's features",
        )
    # an LSE fitted on a policy store reads the layers that store served, capped as it was
    policy = StorePolicy(**json.loads(meta.get("store_policy", "{}")))
    index = policy.layer_indices(generator.layer_names)
    shapes = generator.layer_shapes()
    dims = [shapes[i][0] for i in index]
    if list(model.dims) != dims:
        raise LinearGanError(
            f"the extractor in {lse_dir} reads layers of {model.dims} channels, the generator "
            f"has {dims}",
            "use an extractor trained on this generator's features",
        )
    view = None if policy.identity() == {} else (index, policy)
    return ExtractorPredictor(freeze(model), "LSE", view), meta


def _info(generator: GeneratorAdapter, class_names) -> MaskInfo:
    return MaskInfo(tuple(class_names), generator.name, generator.weights_sha256)


def _save_sample(
    stem: Path, generator: GeneratorAdapter, latent: torch.Tensor, mask: np.ndarray, class_names
) -> Sample:
    """Write the image, its mask and the sidecar for one latent."""
    sample = Sample(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_images(generator, latent[None], 1)[0]).save(sample.image)
    save_mask_png(sample.mask, mask, _info(generator, class_names))
    sample.sidecar.write_text(
        json.dumps(
            {
                "generator": generator.name,
                "generator_sha256": generator.weights_sha256,
                "latent_space": generator.latent_space,
                "class_names": list(class_names),
                "latent": [float(v) for v in latent.cpu()],
            },
            indent=1,
        )
    )
    return sample


@torch.no_grad()
def _predict(predictor: ExtractorPredictor, generator: GeneratorAdapter, z: torch.Tensor):
    device = next(generator.parameters()).device
    return predictor(generator(z.to(device)), generator.resolution).argmax(1).to(torch.uint8).cpu()


def sample_images(
    generator: GeneratorAdapter,
    out_dir: str,
    n: int,
    seed: int,
    lse_dir: str | None = None,
    segmenter=None,
) -> list[Sample]:
    """``n`` seeded samples with their masks: predicted by the LSE at ``lse_dir`` or, without
    one, by ``segmenter`` (e.g. the reference segmenter, to annotate from a starting point)."""
    if (lse_dir is None) == (segmenter is None):
        raise LinearGanError("give either an LSE or a segmenter to predict masks", "pass one")
    z = generator.sample_latents(n, seed)
    if lse_dir is not None:
        predictor, meta = load_lse(lse_dir, generator)
        masks = _predict(predictor, generator, z).numpy()
        class_names = meta["class_names"]
    else:
        masks = segmenter.segment(render_images(generator, z, 64)).labels
        class_names = segmenter.class_names
    return [
        _save_sample(Path(out_dir) / f"seed{seed}-{i:03d}", generator, z[i], masks[i], class_names)
        for i in range(n)
    ]


def _read_sidecar(path: Path) -> dict:
    """A sample's sidecar JSON, checked for the fields every step reads."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not {"latent", "class_names"} <= set(data):
            raise ValueError("fields missing")
        return data
    except (OSError, ValueError) as exc:
        raise LinearGanError(
            f"{path} is not a lineargan sample sidecar ({exc})",
            "use the .json written beside the sample by `lineargan-edit sample`",
        ) from None


def read_sample(path: str, generator: GeneratorAdapter) -> tuple[torch.Tensor, dict]:
    """The latent of a saved sample (its sidecar JSON, or the sidecar beside a mask/image)."""
    p = Path(path)
    for suffix in (MASK, ".png", SIDECAR):
        if p.name.endswith(suffix):
            p = p.with_name(p.name[: -len(suffix)] + SIDECAR)
            break
    if not p.exists():
        raise LinearGanError(
            f"no sample sidecar {p}", "pass a sample saved by `lineargan-edit sample`"
        )
    data = _read_sidecar(p)
    if data.get("generator_sha256") != generator.weights_sha256:
        raise LinearGanError(
            f"{p} was sampled from another generator ({data.get('generator')})",
            "use the generator (and checkpoint) that sample was made with",
        )
    # trunc-wp and mixwp latents have the same size when z and w do (the paper's StyleGANs):
    # only the recorded space tells them apart (sidecars written before it was recorded pass)
    space = data.get("latent_space", generator.latent_space)
    if space != generator.latent_space:
        raise LinearGanError(
            f"{p} was sampled in latent space {space!r}, the generator takes {generator.latent_space!r}",
            f"""load the generator with --generator-options '{{"latent_space": "{space}"}}'""",
        )
    latent = torch.tensor(data["latent"], dtype=torch.float32)
    if latent.shape != (generator.latent_dim,):
        raise LinearGanError(f"{p} holds a latent of shape {tuple(latent.shape)}", "resample it")
    return latent, data


def train_fewshot_from_masks(
    generator: GeneratorAdapter,
    mask_dir: str,
    out_dir: str,
    iterations: int | None = None,
    seed: int = 0,
) -> dict:
    """A few-shot LSE from the annotated masks in ``mask_dir`` (``*.mask.png`` with their
    sidecars), trained like Table 2's (batch = all N images, Adam lr 1e-3, ÷10 after 40 %)."""
    files = sorted(Path(mask_dir).glob(f"*{MASK}"))
    if not files:
        raise LinearGanError(
            f"no *{MASK} files in {mask_dir}", "save samples there and annotate them"
        )
    sidecar = files[0].with_name(files[0].name[: -len(MASK)] + SIDECAR)
    if not sidecar.exists():
        raise LinearGanError(
            f"{files[0]} has no sidecar {sidecar.name}", "keep the .json beside each mask"
        )
    class_names = tuple(_read_sidecar(sidecar)["class_names"])
    latents, labels = [], []
    for f in files:
        latent, _ = read_sample(str(f), generator)
        latents.append(latent)
        labels.append(load_mask_png(f, class_names, generator.resolution, generator.weights_sha256))
    tune_process()
    device = next(generator.parameters()).device
    with torch.no_grad():
        out = generator(torch.stack(latents).to(device))
    feats = [f.to(torch.float16).cpu().numpy() for f in out.features]
    n = len(files)
    steps = iterations or {1: 2000, 4: 2000, 8: 1000}.get(n, 500 if n >= 16 else 1000)
    schedule = fewshot_schedule(n, steps)
    cfg = FitConfig(extractor="LSE", schedule=schedule, seed=seed)
    torch.manual_seed(seed)
    model = build_extractor("LSE", n_class=len(class_names), dims=[f.shape[1] for f in feats])
    result = fit(
        model,
        FixedSamples(feats, np.stack(labels)),
        schedule,
        generator.resolution,
        device,
        seed=seed,
    )
    meta = {
        "extractor": "LSE",
        "method": "schedule",
        "fit_config": cfg.model_dump(mode="json"),
        "generator": generator.name,
        "generator_sha256": generator.weights_sha256,
        "class_names": list(class_names),
        "n_shot": n,
        "masks": [str(f) for f in files],
        "iterations": result.iterations,
        "final_loss": result.final_loss,
        "train_seconds": round(result.seconds, 3),
    }
    save_extractor(model, out_dir, metadata=meta)
    return {**meta, "fit_dir": out_dir}


def edit_sample(
    generator: GeneratorAdapter,
    sample: str,
    mask_png: str,
    lse_dir: str,
    out_stem: str,
    params: SIEParams,
) -> Sample:
    """SIE: the image nearest to ``sample`` whose LSE mask matches the edited ``mask_png``."""
    predictor, meta = load_lse(lse_dir, generator)
    class_names = tuple(meta["class_names"])
    latent, _ = read_sample(sample, generator)
    target = load_mask_png(mask_png, class_names, generator.resolution, generator.weights_sha256)
    device = next(generator.parameters()).device
    goal = torch.from_numpy(target).long()[None].to(device)
    search = optimize_latents(
        generator, latent[None], semantic_loss(predictor, goal), params.schedule()
    )
    z = search.latents[0]
    return _save_sample(
        Path(out_stem),
        generator,
        z,
        _predict(predictor, generator, z[None])[0].numpy(),
        class_names,
    )


def sample_for_mask(
    generator: GeneratorAdapter,
    mask_png: str,
    lse_dir: str,
    out_dir: str,
    n: int,
    params: SCSParams,
) -> list[Sample]:
    """SCS: ``n`` images whose LSE masks match ``mask_png`` (candidates seeded by
    ``params.seed``)."""
    predictor, meta = load_lse(lse_dir, generator)
    class_names = tuple(meta["class_names"])
    target = load_mask_png(mask_png, class_names, generator.resolution, generator.weights_sha256)
    device = next(generator.parameters()).device
    targets = torch.from_numpy(target).long()[None].to(device)
    run = conditional_sample(generator, predictor, targets, [(0, s) for s in range(n)], params)
    masks = _predict(predictor, generator, run.final).numpy()
    stem = Path(mask_png).name.removesuffix(MASK).removesuffix(".png")
    return [
        _save_sample(
            Path(out_dir) / f"{stem}-scs{i:02d}", generator, run.final[i], masks[i], class_names
        )
        for i in range(n)
    ]

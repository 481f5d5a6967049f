"""What a person does with a GAN and a few-shot LSE (Appx G "Usage"), as plain steps.

1. :func:`sample_images`: sample images and save, per image, the PNG, its predicted mask as an
   editable palette PNG and a sidecar JSON with its latent and generator.
2. :func:`train_fewshot_from_masks`: annotate a few of those masks (paint with the palette)
   and train a few-shot LSE on them (the generator recomputes each image's features from the
   latent in its sidecar).
3. :func:`edit_sample`: edit a sample's mask and let SIE find the image that matches it.
4. :func:`sample_for_mask`: draw (or reuse) a mask and let SCS sample images that match it.

Every set of masks written gets a palette legend beside it (``legend.png``, ``legend.json``:
index, colour and name of each class), and every output location is checked before any work.

``lineargan-edit`` (:mod:`flows.edit`) is the command line over these.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from lineargan.analyses.fewshot import FixedSamples, fewshot_schedule
from lineargan.analyses.scs import SCSParams, conditional_sample
from lineargan.analyses.sefa import (
    Labeller,
    SefaBrowseParams,
    direction_rows,
    direction_summary,
    reference_labels,
    sefa_grid,
)
from lineargan.analyses.sie import SIEParams
from lineargan.cache import render_images
from lineargan.config import FitConfig
from lineargan.device import resolve_device
from lineargan.driver import ProgressFn, drive
from lineargan.errors import CheckpointError, LinearGanError, OutputNotWritableError
from lineargan.extractors import build_extractor
from lineargan.latent_bounds import LatentBound, latent_bound
from lineargan.latent_search import optimize_latents, semantic_loss
from lineargan.masks import MaskInfo, load_mask_png, save_legend, save_mask_png
from lineargan.models import GeneratorAdapter, Segmenter
from lineargan.models.registry import cached_generator
from lineargan.predictors import ExtractorPredictor, freeze
from lineargan.sefa import check_editable, sefa
from lineargan.store_policy import StorePolicy
from lineargan.training import ScheduledAdam
from storage.checkpoints import load_extractor, read_config, save_extractor
from tasks.process import tune_process

SIDECAR = ".json"
MASK = ".mask.png"
_SAMPLE_NAME = re.compile(r"seed(\d+)-\d+$")  # <out>/seed<seed>-<index>, as sample_images names


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


def output_dir(path: str) -> Path:
    """``path`` as an output directory, created now: before any work, so a typo (an existing
    file, a read-only place) stops the command before minutes of sampling or training."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputNotWritableError(
            f"output {path} is a file, not a directory (or lies under one)",
            "pass a directory for --out (a new one is created)",
        ) from None
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot create the output directory {path} ({exc.strerror})",
            "pass a directory you can write to",
        ) from None
    return out


def _output_stem(path: str) -> Path:
    """``path`` as the stem of a sample's three files, its directory created now."""
    stem = Path(path)
    if stem.is_dir():
        raise OutputNotWritableError(
            f"output {path} is a directory; edit writes <stem>.png, <stem>.mask.png, <stem>.json",
            f"pass a path stem such as {stem / 'edited'}",
        )
    output_dir(str(stem.parent))
    return stem


def load_lse(lse_dir: str, generator: GeneratorAdapter) -> tuple[ExtractorPredictor, dict]:
    """A saved LSE as a predictor, refused if it was trained on another generator."""
    device = next(generator.parameters()).device
    if not (Path(lse_dir) / "config.json").exists():
        raise LinearGanError(
            f"no trained LSE in {lse_dir}",
            "train one with `lineargan-edit train-fewshot`, or pass a fit directory of a "
            "reproduce run (results/fits/fewshot-n8-r0-converged-ridge…)",
        )
    try:
        model, meta = load_extractor(lse_dir, device)
    except CheckpointError as exc:  # truncated weights, an edited config.json
        raise LinearGanError(
            exc.problem,
            f"train the LSE again (`lineargan-edit train-fewshot --out {lse_dir}`), or copy it "
            "again if it was copied",
        ) from None
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


def mask_info(generator: GeneratorAdapter, class_names) -> MaskInfo:
    """What a mask file of ``generator`` records: its classes and the generator's weights."""
    return MaskInfo(tuple(class_names), generator.name, generator.weights_sha256)


def save_sample(
    stem: Path,
    generator: GeneratorAdapter,
    latent: torch.Tensor,
    mask: np.ndarray,
    class_names,
    **extra,
) -> Sample:
    """Write the image, its mask and the sidecar (latent, generator, ``extra``) of one latent."""
    sample = Sample(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_images(generator, latent[None], 1)[0]).save(sample.image)
    save_mask_png(sample.mask, mask, mask_info(generator, class_names))
    sample.sidecar.write_text(
        json.dumps(
            {
                "generator": generator.name,
                "generator_sha256": generator.weights_sha256,
                "latent_space": generator.latent_space,
                "class_names": list(class_names),
                **extra,
                "latent": [float(v) for v in latent.cpu()],
            },
            indent=1,
        )
    )
    return sample


@torch.no_grad()
def predict_masks(predictor: ExtractorPredictor, generator: GeneratorAdapter, z: torch.Tensor):
    """The LSE's class maps (B, H, W) uint8 of latents ``z`` (B, latent_dim)."""
    device = next(generator.parameters()).device
    return predictor(generator(z.to(device)), generator.resolution).argmax(1).to(torch.uint8).cpu()


def _seed_in_name(path: Path) -> int | None:
    """The seed in a sample file's name (``seed<seed>-<index>.json/.mask.png``), if any."""
    match = _SAMPLE_NAME.fullmatch(path.name.removesuffix(MASK).removesuffix(SIDECAR))
    return int(match.group(1)) if match else None


def _sample_seed(sidecar: Path) -> int | None:
    """The seed a sample was drawn with: recorded in its sidecar, else read from its name
    (sidecars written before seeds were recorded)."""
    try:
        data = json.loads(sidecar.read_text())
        if isinstance(data, dict) and isinstance(data.get("seed"), int):
            return data["seed"]
    except (OSError, ValueError):
        pass
    return _seed_in_name(sidecar)


def taken_seeds(out_dir: str, lse_dir: str | None = None) -> set[int]:
    """Seeds already drawn: by the samples in ``out_dir`` and, with an LSE trained by
    ``train-fewshot``, by the samples it was trained on (whose faces a person has just
    annotated: predicting masks for those again shows nothing new)."""
    seeds = {_sample_seed(f) for f in Path(out_dir).glob(f"*{SIDECAR}")}
    if lse_dir is not None and (Path(lse_dir) / "config.json").exists():
        try:
            meta = read_config(lse_dir, "LSE").get("metadata", {})
        except CheckpointError:
            meta = {}  # sample_images refuses that LSE in its own words
        seeds |= set(meta.get("sample_seeds", []))
        seeds |= {_seed_in_name(Path(m)) for m in meta.get("masks", [])}
    return {s for s in seeds if s is not None}


def default_seed(out_dir: str, lse_dir: str | None = None) -> int:
    """The first seed after every taken one (:func:`taken_seeds`): new faces, and no earlier
    sample overwritten; 0 in a fresh directory."""
    seeds = taken_seeds(out_dir, lse_dir)
    return max(seeds) + 1 if seeds else 0


def sample_images(
    generator: GeneratorAdapter,
    out_dir: str,
    n: int,
    seed: int,
    lse_dir: str | None = None,
    segmenter=None,
) -> list[Sample]:
    """``n`` seeded samples with their masks: predicted by the LSE at ``lse_dir`` or, without
    one, by ``segmenter`` (e.g. the reference segmenter, to annotate from a starting point).
    Each sidecar records the seed and index that drew it."""
    if (lse_dir is None) == (segmenter is None):
        raise LinearGanError("give either an LSE or a segmenter to predict masks", "pass one")
    output_dir(out_dir)
    z = generator.sample_latents(n, seed)
    if lse_dir is not None:
        predictor, meta = load_lse(lse_dir, generator)
        masks = predict_masks(predictor, generator, z).numpy()
        class_names = meta["class_names"]
    else:
        masks = segmenter.segment(render_images(generator, z, 64)).labels
        class_names = segmenter.class_names
    save_legend(out_dir, class_names)
    return [
        save_sample(
            Path(out_dir) / f"seed{seed}-{i:03d}",
            generator,
            z[i],
            masks[i],
            class_names,
            seed=seed,
            index=i,
        )
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


def read_sample(
    path: str, generator: GeneratorAdapter, bound: LatentBound | None = None
) -> tuple[torch.Tensor, dict]:
    """The latent of a saved sample (its sidecar JSON, or the sidecar beside a mask/image),
    refused unless it is a list of numbers that ``generator``'s latent space could have drawn
    (``bound``: :func:`~lineargan.latent_bounds.latent_bound`, computed when not given)."""
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
    values = data["latent"]
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise LinearGanError(
            f"{p}'s latent is not a list of numbers",
            "use the sidecar written by `lineargan-edit sample` (or resample it)",
        )
    latent = torch.tensor(values, dtype=torch.float64)
    if latent.shape != (generator.latent_dim,):
        raise LinearGanError(f"{p} holds a latent of shape {tuple(latent.shape)}", "resample it")
    why = (bound or latent_bound(generator)).violation(latent)
    if why is not None:
        raise LinearGanError(
            f"{p} holds no latent of this generator: {why}",
            "use a latent saved by `lineargan-edit sample`/`edit` (or resample it)",
        )
    return latent.float(), data


def train_fewshot_from_masks(
    generator: GeneratorAdapter,
    mask_dir: str,
    out_dir: str,
    iterations: int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    reports: int = 10,
    on_model: Callable[[torch.nn.Module], None] | None = None,
) -> dict:
    """A few-shot LSE from the annotated masks in ``mask_dir`` (``*.mask.png`` with their
    sidecars), trained like Table 2's (batch = all N images, Adam lr 1e-3, ÷10 after 40 %).
    ``progress(iteration, total, loss)`` is called about ``reports`` times during the fit (an
    exception it raises stops the fit before anything is saved); ``on_model`` receives the LSE
    before its first step, so a caller can show its predictions while it trains (the browser
    app's live view, read from ``progress``, between steps)."""
    output_dir(out_dir)
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
    latents, labels, seeds = [], [], []
    bound = latent_bound(generator)
    for f in files:
        latent, data = read_sample(str(f), generator, bound)
        latents.append(latent)
        seeds.append(data.get("seed", _seed_in_name(f)))
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
    if on_model is not None:
        on_model(model)
    result = drive(
        ScheduledAdam(
            model,
            FixedSamples(feats, np.stack(labels)),
            schedule,
            generator.resolution,
            device,
            seed=seed,
        ),
        progress=progress,
        log_every=max(1, -(-steps // reports)),  # ~`reports` progress calls; same loss
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
        "sample_seeds": sorted({s for s in seeds if isinstance(s, int)}),
        "iterations": result.iterations,
        "final_loss": result.final_loss,
        "train_seconds": round(result.seconds, 3),
    }
    save_extractor(model, out_dir, metadata=meta)
    return {**meta, "fit_dir": out_dir}


@dataclass(frozen=True)
class EditScore:
    """How much of the edited region holds the target class after an edit.

    The region is where the edited mask differs from the LSE's mask of the sample before the
    edit (what the person changed). ``lse`` is the share of it where the LSE, which drove the
    edit, now predicts the target class; ``reference``/``reference_before`` the same share in
    the reference segmenter's labels of the edited and the original image: an edit the LSE
    believes in but the segmenter does not see is a failed one.
    """

    region_px: int
    lse: float
    segmenter: str | None = None
    reference: float | None = None
    reference_before: float | None = None
    # the segmenter's own detector fired on the edited image (else its labels come from its
    # fallback, as in the stores)
    detected: bool = True


@dataclass(frozen=True)
class Edited:
    """The edited sample and its score (None: the edited mask equals the sample's)."""

    sample: Sample
    score: EditScore | None


def check_reference(segmenter: Segmenter | None, class_names: tuple[str, ...]) -> None:
    """Refuse a reference segmenter whose classes are not the LSE's: its labels could not be
    compared with the edited mask."""
    if segmenter is not None and tuple(segmenter.class_names) != class_names:
        raise LinearGanError(
            f"the reference segmenter {segmenter.name} labels {list(segmenter.class_names)}, "
            f"the LSE {list(class_names)}",
            "pass --segmenter naming the segmenter whose classes the LSE predicts, or "
            "--segmenter null to skip its score",
        )


def _share(labels: np.ndarray, target: np.ndarray, region: np.ndarray) -> float:
    return float((labels[region] == target[region]).mean())


def _score(
    generator: GeneratorAdapter,
    before: np.ndarray,
    after: np.ndarray,
    target: np.ndarray,
    latents: torch.Tensor,
    segmenter: Segmenter | None,
) -> EditScore | None:
    """:class:`EditScore` of an edit from the LSE's masks ``before``/``after`` and the two
    latents (original, edited), rendered for the reference segmenter."""
    region = target != before
    if not region.any():
        return None
    lse = _share(after, target, region)
    if segmenter is None:
        return EditScore(int(region.sum()), lse)
    out = segmenter.segment(render_images(generator, latents, 1))
    detected = bool(out.detected[1]) if len(out.detected) else True
    return EditScore(
        int(region.sum()),
        lse,
        segmenter.name,
        _share(out.labels[1], target, region),
        _share(out.labels[0], target, region),
        detected,
    )


def edit_sample(
    generator: GeneratorAdapter,
    sample: str,
    mask_png: str,
    lse_dir: str,
    out_stem: str,
    params: SIEParams,
    segmenter: Segmenter | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Edited:
    """SIE: the image nearest to ``sample`` whose LSE mask matches the edited ``mask_png``,
    scored (:class:`EditScore`) by the LSE and, when given, the reference ``segmenter``.
    ``progress(step, steps)`` follows the search (an exception it raises cancels the edit
    before anything is written)."""
    stem = _output_stem(out_stem)
    predictor, meta = load_lse(lse_dir, generator)
    class_names = tuple(meta["class_names"])
    check_reference(segmenter, class_names)
    latent, _ = read_sample(sample, generator)
    target = load_mask_png(mask_png, class_names, generator.resolution, generator.weights_sha256)
    device = next(generator.parameters()).device
    goal = torch.from_numpy(target).long()[None].to(device)
    schedule = params.schedule(generator.latent_vectors)
    search = optimize_latents(
        generator, latent[None], semantic_loss(predictor, goal), schedule, progress
    )
    z = search.latents[0]
    after = predict_masks(predictor, generator, z[None])[0].numpy()
    before = predict_masks(predictor, generator, latent[None])[0].numpy()
    score = _score(generator, before, after, target, torch.stack([latent, z.cpu()]), segmenter)
    save_legend(stem.parent, class_names)
    edited = save_sample(
        stem,
        generator,
        z,
        after,
        class_names,
        edited_from=str(sample),
        edit_score=None if score is None else asdict(score),
    )
    return Edited(edited, score)


def sample_for_mask(
    generator: GeneratorAdapter,
    mask_png: str,
    lse_dir: str,
    out_dir: str,
    n: int,
    params: SCSParams,
    progress: Callable[[int, int], None] | None = None,
) -> list[Sample]:
    """SCS: ``n`` images whose LSE masks match ``mask_png`` (candidates seeded by
    ``params.seed``); ``progress(step, steps)`` as in :func:`edit_sample`."""
    output_dir(out_dir)
    predictor, meta = load_lse(lse_dir, generator)
    class_names = tuple(meta["class_names"])
    target = load_mask_png(mask_png, class_names, generator.resolution, generator.weights_sha256)
    device = next(generator.parameters()).device
    targets = torch.from_numpy(target).long()[None].to(device)
    pairs = [(0, s) for s in range(n)]
    run = conditional_sample(generator, predictor, targets, pairs, params, progress)
    masks = predict_masks(predictor, generator, run.final).numpy()
    stem = Path(mask_png).name.removesuffix(MASK).removesuffix(".png")
    save_legend(out_dir, class_names)
    return [
        save_sample(
            Path(out_dir) / f"{stem}-scs{i:02d}", generator, run.final[i], masks[i], class_names
        )
        for i in range(n)
    ]


@dataclass
class SefaBrowse:
    """What ``lineargan-edit sefa`` wrote: one grid per latent, the per-class rows and the
    directions (with their names by the labeller)."""

    grids: list[Path]
    semantics: Path
    directions: Path
    rows: pd.DataFrame


def browse_sefa(
    generator: GeneratorAdapter,
    out: str,
    params: SefaBrowseParams,
    lse_dir: str | None = None,
    segmenter: Segmenter | None = None,
    sample: str | None = None,
) -> SefaBrowse:
    """SeFa's top directions of ``generator`` applied to the latent of ``sample`` (a sidecar
    of ``lineargan-edit sample``) or to ``params.n`` seeded draws, each image labelled by the
    LSE in ``lse_dir`` (and scored by ``segmenter`` when its classes are the LSE's) or, without
    an LSE, by ``segmenter``; writes ``sefa-<i>.png`` (rows = directions, columns = α),
    ``sefa_semantics.csv`` and ``sefa_directions.json``."""
    out_dir = output_dir(out)
    fact = sefa(generator, params.layers, params.module, params.normalize, params.order)
    check_editable(generator, fact)
    if lse_dir is not None:
        lse, meta = load_lse(lse_dir, generator)
        class_names = tuple(meta["class_names"])
        check_reference(segmenter, class_names)
        label = Labeller(generator, lse, params.batch)
        reference = segmenter
    elif segmenter is not None:
        class_names = tuple(segmenter.class_names)
        label, reference = Labeller(generator, None, params.batch, segmenter), None
    else:
        raise LinearGanError(
            "lineargan-edit sefa needs something to label the images",
            "pass --lse DIR or a --segmenter",
        )
    device = next(generator.parameters()).device
    if sample is not None:
        latents = read_sample(sample, generator)[0][None]
    else:
        latents = generator.sample_latents(params.n, params.seed)
    latents = latents.to(device)
    images, labels = label(latents)
    base = {"lse": labels}
    if reference is not None:
        base["ref"], base["detected"] = reference_labels(reference, images)
    n_dir = min(params.directions, fact.dim)
    rows = pd.concat(
        [
            direction_rows(k, params.alphas, fact, latents, label, base, reference, class_names)
            for k in range(n_dir)
        ],
        ignore_index=True,
    )
    summaries = [
        direction_summary(fact, k, rows[rows.direction == k], params.naming, label.name)
        for k in range(n_dir)
    ]
    names = [s["name"] for s in summaries]
    grids = []
    for i in range(len(latents)):
        grid = sefa_grid(params.alphas, fact, latents[i : i + 1], label, names, len(class_names))
        grids.append(out_dir / f"sefa-{i}.png")
        grid.save(grids[-1])
    semantics, directions = out_dir / "sefa_semantics.csv", out_dir / "sefa_directions.json"
    rows.to_csv(semantics, index=False)
    directions.write_text(json.dumps(summaries, indent=1))
    return SefaBrowse(grids, semantics, directions, pd.DataFrame(summaries))

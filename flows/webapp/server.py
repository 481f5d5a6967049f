"""``lineargan-edit serve``: the paper's usage (Appx G) in a browser, on one generator.

Two pages (tabs of one static page, served from this package: no build step, no CDN): annotate
generated images starting from the reference segmenter's (or the current LSE's) mask and train
the few-shot LSE while annotating, with a live prediction on a held-out sample; then edit an
image with semantic strokes (SIE) or sample images for a painted layout (SCS).

The JSON API reuses :mod:`tasks.editing`, so everything it writes is what ``lineargan-edit``
writes and either tool reopens the other's files. The workspace is the only place written::

    annotate/   samples drawn to annotate (image, reference mask, sidecar with the latent)
    train/      the training set: annotated masks with their image and sidecar
    heldout/    the held-out sample the live training view predicts
    runs/       one folder per training run: the training set it saw and its LSE
    lse/        the current few-shot LSE (the `train-fewshot` format: `--lse <workspace>/lse`)
    samples/    samples to edit (masks by the LSE once one is trained)
    imported/   sidecars uploaded from elsewhere (e.g. written by `lineargan-edit`)
    edits/      SIE results (<stem>-e<k>.*) and the painted target masks (*-target.mask.png)
    scs/        painted layouts (layout-<k>.mask.png) and their SCS samples (layout-<k>/)

Every path a request names is relative to the workspace and refused if it leaves it. Long work
(training, SIE, SCS) runs as queued jobs, one at a time per model (:mod:`flows.webapp.jobs`);
quick requests (sample, masks, predictions) share a lock on the generator and segmenter with
the jobs, except while training, which needs the generator only for its first pass.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field, PositiveInt

from flows.webapp.jobs import BusyError, Job, JobQueue
from lineargan.analyses.scs import SCSParams, pair_counts
from lineargan.analyses.sie import SIEParams
from lineargan.cache import render_images
from lineargan.config import ProtocolName
from lineargan.errors import LinearGanError
from lineargan.masks import LEGEND_JSON, legend_entries, load_mask_png, save_legend, save_mask_png
from lineargan.models import GeneratorAdapter, Segmenter
from tasks.editing import (
    MASK,
    SIDECAR,
    default_seed,
    edit_sample,
    load_lse,
    mask_info,
    predict_masks,
    read_sample,
    sample_for_mask,
    sample_images,
    save_sample,
    train_fewshot_from_masks,
)

ANNOTATE, TRAIN, HELDOUT, RUNS, LSE = "annotate", "train", "heldout", "runs", "lse"
SAMPLES, IMPORTED, EDITS, SCS = "samples", "imported", "edits", "scs"
FOLDERS = (ANNOTATE, TRAIN, HELDOUT, SAMPLES, IMPORTED, EDITS, SCS)
HELDOUT_SEED = 1_000_000  # far from the seeds a person samples (0, 1, 2, ...)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
STATIC = resources.files("flows.webapp") / "static"


class ApiError(LinearGanError):
    """A request the app refuses: its HTTP status and the one-line problem and fix."""

    def __init__(self, problem: str, fix: str, status: int = 400) -> None:
        super().__init__(problem, fix)
        self.status = status


class Workspace:
    """The one directory the app writes; request paths are relative to it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, rel: str) -> Path:
        """``rel`` under the workspace, refused when it is absolute or leaves it (``..``,
        a symbolic link pointing out)."""
        if not rel or Path(rel).is_absolute():
            raise ApiError(
                f"path {rel!r} is not relative to the workspace",
                "name files by the paths the app returned (e.g. annotate/seed0-000)",
            )
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root):
            raise ApiError(
                f"path {rel!r} lies outside the workspace {self.root}",
                "name files inside the workspace, by the paths the app returned",
            )
        return target

    def rel(self, path: Path) -> str:
        """``path`` as the workspace-relative name the page uses."""
        return path.resolve().relative_to(self.root).as_posix()

    def stem(self, rel: str) -> Path:
        """A sample's stem from its name or any of its three files, which must exist."""
        p = self.path(rel)
        for suffix in (MASK, ".png", SIDECAR):
            if p.name.endswith(suffix):
                p = p.with_name(p.name[: -len(suffix)])
                break
        if not p.with_name(p.name + SIDECAR).is_file():
            raise ApiError(
                f"no sample {rel!r} in the workspace", "pick a sample the app listed", 404
            )
        return p

    def next_name(self, folder: Path, prefix: str) -> str:
        """``<prefix><k>`` with the first ``k`` (1, 2, ...) that no file or folder in
        ``folder`` is named by (``<prefix><k>``, ``<prefix><k>.*``, ``<prefix><k>-*``): every
        result is kept, nothing overwritten."""
        names = {p.name for p in folder.glob(f"{prefix}*")} if folder.exists() else set()
        k = 1
        while any(re.match(rf"{re.escape(prefix)}{k}([.-]|$)", n) for n in names):
            k += 1
        return f"{prefix}{k}"


class LockedSegmenter:
    """The reference segmenter behind the model lock: jobs (SIE's score) and requests share
    it, and a native segmenter (dlib) is not known to be safe across threads."""

    def __init__(self, segmenter: Segmenter, lock: threading.RLock) -> None:
        self.inner, self.lock = segmenter, lock
        self.name, self.class_names = segmenter.name, segmenter.class_names

    def segment(self, images: np.ndarray):
        with self.lock:
            return self.inner.segment(images)


def mean_iou(labels: np.ndarray, reference: np.ndarray, n_class: int) -> float:
    """Mean IoU over the classes present in either map (the live view's agreement)."""
    inter, union = pair_counts(reference[None], labels[None], n_class)
    present = union[0] > 0
    return float((inter[0][present] / union[0][present]).mean()) if present.any() else 1.0


class Studio:
    """One model's state behind the API: generator, reference segmenter, workspace, jobs."""

    def __init__(
        self,
        generator: GeneratorAdapter,
        segmenter: Segmenter,
        workspace: str | Path,
        max_pending: int = 2,
    ) -> None:
        self.generator = generator
        self.model_lock = threading.RLock()
        self.files_lock = threading.RLock()
        self.segmenter = LockedSegmenter(segmenter, self.model_lock)
        self.ws = Workspace(workspace)
        self.jobs = JobQueue(max_pending)

    # -- what the page needs to know -------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        """The reference segmenter's classes: what is annotated and what the LSE predicts."""
        return tuple(self.segmenter.class_names)

    def lse_dir(self) -> Path | None:
        d = self.ws.root / LSE
        return d if (d / "config.json").is_file() else None

    def info(self) -> dict[str, Any]:
        g = self.generator
        with self.files_lock:
            lse = self.lse_dir()
            meta = json.loads((lse / "config.json").read_text())["metadata"] if lse else None
        return {
            "generator": g.name,
            "resolution": g.resolution,
            "latent_space": g.latent_space,
            "segmenter": self.segmenter.name,
            "classes": legend_entries(self.class_names),
            "workspace": str(self.ws.root),
            "lse": None
            if meta is None
            else {
                "path": LSE,
                "n_shot": meta["n_shot"],
                "iterations": meta["iterations"],
                "final_loss": meta["final_loss"],
            },
            "jobs": [j.view() for j in self.jobs.active()],
        }

    def listing(self, folder: str) -> list[dict[str, str]]:
        if folder not in FOLDERS:
            raise ApiError(f"unknown folder {folder!r}", f"use one of: {', '.join(FOLDERS)}")
        root = self.ws.root / folder
        sidecars = sorted(root.rglob(f"*{SIDECAR}")) if root.exists() else []
        sidecars = [p for p in sidecars if p.name != LEGEND_JSON]
        return [self.sample_view(p.with_name(p.name[: -len(SIDECAR)])) for p in sidecars]

    def sample_view(self, stem: Path) -> dict[str, str]:
        rel = self.ws.rel(stem)
        return {
            "path": rel,
            "name": stem.name,
            "image": rel + ".png",
            "mask": rel + MASK,
            "latent": rel + SIDECAR,
        }

    # -- masks -----------------------------------------------------------------------------

    def labels(self, values: list[int]) -> np.ndarray:
        """A mask the page sent (class indices, row by row), checked against the model."""
        res, n = self.generator.resolution, len(self.class_names)
        if len(values) != res * res:
            raise ApiError(
                f"the mask has {len(values)} pixels; the generator makes {res}×{res} images "
                f"({res * res} pixels)",
                "send one class index per pixel, row by row",
            )
        labels = np.asarray(values, dtype=np.int64).reshape(res, res)
        bad = (labels < 0) | (labels >= n)
        if bad.any():
            raise ApiError(
                f"unknown class index {int(labels[bad][0])} at {int(bad.sum())} pixels; the "
                f"classes are 0-{n - 1}",
                "paint only with the palette's classes: " + ", ".join(self.class_names),
            )
        return labels.astype(np.uint8)

    def mask(self, rel: str, source: Literal["file", "reference", "lse"]) -> dict[str, Any]:
        """A sample's mask as class indices: its mask file, the reference segmenter's labels
        of its image, or the current LSE's prediction."""
        stem = self.ws.stem(rel)
        if source == "file":
            labels = load_mask_png(
                stem.with_name(stem.name + MASK),
                self.class_names,
                self.generator.resolution,
                self.generator.weights_sha256,
            )
        else:
            latent, _ = read_sample(str(stem.with_name(stem.name + SIDECAR)), self.generator)
            with self.model_lock:
                if source == "reference":
                    image = render_images(self.generator, latent[None], 1)
                    labels = self.segmenter.segment(image).labels[0]
                else:
                    labels = predict_masks(self._lse()[0], self.generator, latent[None])[0]
        return {"path": self.ws.rel(stem), "source": source, "labels": _flat(labels)}

    def _lse(self):
        with self.files_lock:
            lse = self.lse_dir()
            if lse is None:
                raise ApiError(
                    "no few-shot LSE trained yet",
                    "annotate a few images, add them to the training set and train",
                    409,
                )
            return load_lse(str(lse), self.generator)

    # -- sampling and the training set -----------------------------------------------------

    def sample(self, folder: str, n: int, seed: int | None) -> list[dict[str, str]]:
        """``n`` new samples in ``folder`` (annotate: masks by the reference segmenter; samples:
        by the LSE once one is trained), seeded after every seed drawn there before."""
        if folder not in (ANNOTATE, SAMPLES):
            raise ApiError(f"cannot sample into {folder!r}", f"use {ANNOTATE} or {SAMPLES}")
        out = self.ws.root / folder
        with self.files_lock:
            lse = self.lse_dir() if folder == SAMPLES else None
            lse_arg = None if lse is None else str(lse)
            if seed is None:
                seed = default_seed(str(out), lse_arg)
            with self.model_lock:
                made = sample_images(
                    self.generator,
                    str(out),
                    n,
                    seed,
                    lse_arg,
                    None if lse_arg else self.segmenter,
                )
        return [self.sample_view(s.stem) for s in made]

    def annotate(self, rel: str, values: list[int]) -> dict[str, Any]:
        """Add a sample with its painted mask to the training set (replacing an earlier
        annotation of the same sample)."""
        stem = self.ws.stem(rel)
        labels = self.labels(values)
        dest = self.ws.root / TRAIN / stem.name
        with self.files_lock:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest != stem:
                shutil.copyfile(
                    stem.with_name(stem.name + ".png"), dest.with_name(dest.name + ".png")
                )
                shutil.copyfile(
                    stem.with_name(stem.name + SIDECAR), dest.with_name(dest.name + SIDECAR)
                )
            save_mask_png(
                dest.with_name(dest.name + MASK),
                labels,
                mask_info(self.generator, self.class_names),
            )
            save_legend(dest.parent, self.class_names)
        return {"added": self.sample_view(dest), "training_set": len(self.listing(TRAIN))}

    def remove_annotation(self, rel: str) -> dict[str, Any]:
        stem = self.ws.stem(rel)
        if stem.parent != self.ws.root / TRAIN:
            raise ApiError(f"{rel!r} is not in the training set", f"name a sample in {TRAIN}/")
        with self.files_lock:
            for suffix in (".png", MASK, SIDECAR):
                stem.with_name(stem.name + suffix).unlink(missing_ok=True)
        return {"training_set": len(self.listing(TRAIN))}

    def import_sidecar(self, name: str, sidecar: dict) -> dict[str, str]:
        """A sample from a sidecar written elsewhere (``lineargan-edit``'s ``.json``): checked
        like every latent (generator, space, shape, plausibility), then rendered with its mask
        (the LSE's once one is trained, else the reference segmenter's)."""
        if not _NAME.fullmatch(name):
            raise ApiError(f"bad sample name {name!r}", "use letters, digits, '-', '_' or '.'")
        stem = self.ws.root / IMPORTED / name.removesuffix(SIDECAR)
        stem.parent.mkdir(parents=True, exist_ok=True)
        scratch = stem.with_name(stem.name + ".upload" + SIDECAR)
        scratch.write_text(json.dumps(sidecar))
        try:
            latent, data = read_sample(str(scratch), self.generator)
        finally:
            scratch.unlink()
        with self.files_lock, self.model_lock:
            if self.lse_dir() is not None:
                predictor, meta = self._lse()
                labels = predict_masks(predictor, self.generator, latent[None])[0].numpy()
                classes = meta["class_names"]
            else:
                image = render_images(self.generator, latent[None], 1)
                labels, classes = self.segmenter.segment(image).labels[0], self.class_names
            extra = {k: v for k, v in data.items() if k in ("seed", "index", "edited_from")}
            save_sample(stem, self.generator, latent, labels, classes, **extra)
            save_legend(stem.parent, classes)
        return self.sample_view(stem)

    # -- jobs ------------------------------------------------------------------------------

    def train(self, iterations: int | None, reports: int) -> Job:
        """Queue a few-shot LSE fit on the training set (as ``train-fewshot``), with a live
        prediction on the held-out sample and its IoU against the reference mask."""
        if not self.listing(TRAIN):
            raise ApiError(
                "the training set is empty",
                "annotate an image and add it to the training set first",
            )
        return self.jobs.submit("train", lambda job: self._train(job, iterations, reports))

    def _train(self, job: Job, iterations: int | None, reports: int) -> dict:
        run = self.ws.root / RUNS / self.ws.next_name(self.ws.root / RUNS, "train-")
        masks, lse_out = run / "masks", run / LSE
        with self.files_lock:  # the training set as it is now; annotating goes on meanwhile
            shutil.copytree(self.ws.root / TRAIN, masks)
        heldout = self._heldout()
        locked = [self.model_lock]
        self.model_lock.acquire()  # the generator's pass over the training set

        def on_model(model: torch.nn.Module) -> None:
            locked.pop().release()  # features computed: the rest trains the LSE alone
            heldout["model"] = model

        def progress(iteration: int, total: int, loss: float) -> None:
            with torch.no_grad():
                logits = heldout["model"](heldout["features"], self.generator.resolution)
            labels = logits.argmax(1)[0].to(torch.uint8).numpy()
            job.preview = {
                "iteration": iteration,
                "sample": heldout["view"],
                "labels": _flat(labels),
                "iou": mean_iou(labels, heldout["reference"], len(self.class_names)),
            }
            job.step(iteration, total, loss)

        try:
            meta = train_fewshot_from_masks(
                self.generator,
                str(masks),
                str(lse_out),
                iterations,
                progress=progress,
                reports=reports,
                on_model=on_model,
            )
        finally:
            for lock in locked:
                lock.release()
        with self.files_lock:  # the new LSE replaces the current one in one step
            current, old = self.ws.root / LSE, run / "replaced-lse"
            if current.exists():
                current.rename(old)
            shutil.copytree(lse_out, current)
            shutil.rmtree(old, ignore_errors=True)
        return {
            "lse": LSE,
            "run": self.ws.rel(run),
            "n_shot": meta["n_shot"],
            "iterations": meta["iterations"],
            "final_loss": meta["final_loss"],
            "heldout_iou": (job.preview or {}).get("iou"),
        }

    def _heldout(self) -> dict[str, Any]:
        """The held-out sample of the live view (drawn once, masked by the reference
        segmenter) and its generator features."""
        folder = self.ws.root / HELDOUT
        with self.files_lock, self.model_lock:
            if not self.listing(HELDOUT):
                sample_images(self.generator, str(folder), 1, HELDOUT_SEED, None, self.segmenter)
            stem = self.ws.stem(self.listing(HELDOUT)[0]["path"])
            latent, _ = read_sample(str(stem.with_name(stem.name + SIDECAR)), self.generator)
            device = next(self.generator.parameters()).device
            with torch.no_grad():
                out = self.generator(latent[None].to(device))
            reference = load_mask_png(
                stem.with_name(stem.name + MASK), self.class_names, self.generator.resolution
            )
        features = [f.to(torch.float16).float().cpu() for f in out.features]
        return {"view": self.sample_view(stem), "features": features, "reference": reference}

    def edit(self, rel: str, values: list[int], params: SIEParams) -> Job:
        """Queue SIE of a sample towards its painted mask (written beside the result as
        ``<stem>-e<k>-target.mask.png``)."""
        stem = self.ws.stem(rel)
        labels = self.labels(values)
        self._lse()  # refuse now, not in the job, when no LSE exists
        out = self.ws.root / EDITS
        with self.files_lock:
            name = self.ws.next_name(out, f"{stem.name}-e")
            target = out / f"{name}-target{MASK}"
            save_mask_png(target, labels, mask_info(self.generator, self.class_names))

        def work(job: Job) -> dict:
            with self.model_lock:  # jobs run one at a time: no training replaces the LSE now
                edited = edit_sample(
                    self.generator,
                    str(stem.with_name(stem.name + SIDECAR)),
                    str(target),
                    str(self.lse_dir()),
                    str(out / name),
                    params,
                    self.segmenter,
                    progress=job.step,
                )
            score = edited.score
            return {
                "original": self.sample_view(stem),
                "edited": self.sample_view(edited.sample.stem),
                "target": self.ws.rel(target),
                "score": None if score is None else asdict(score),
            }

        return self.jobs.submit("edit", work)

    def scs(self, values: list[int], n: int, params: SCSParams) -> Job:
        """Queue SCS: ``n`` samples whose LSE masks match a painted layout."""
        labels = self.labels(values)
        self._lse()
        out = self.ws.root / SCS
        with self.files_lock:
            name = self.ws.next_name(out, "layout-")
            layout = out / f"{name}{MASK}"
            save_mask_png(layout, labels, mask_info(self.generator, self.class_names))

        def work(job: Job) -> dict:
            with self.model_lock:
                made = sample_for_mask(
                    self.generator,
                    str(layout),
                    str(self.lse_dir()),
                    str(out / name),
                    n,
                    params,
                    progress=job.step,
                )
            return {
                "layout": self.ws.rel(layout),
                "samples": [self.sample_view(s.stem) for s in made],
            }

        return self.jobs.submit("scs", work)


def _flat(labels) -> list[int]:
    return np.asarray(labels, dtype=np.int64).ravel().tolist()


# -- the HTTP API ----------------------------------------------------------------------------


class SampleRequest(BaseModel):
    folder: Literal["annotate", "samples"] = ANNOTATE
    n: PositiveInt = Field(1, le=16)
    seed: int | None = Field(None, ge=0)


class MaskRequest(BaseModel):
    path: str
    labels: list[int]


class TrainRequest(BaseModel):
    iterations: PositiveInt | None = Field(None, description="None: Table 2's for this N")
    reports: PositiveInt = Field(20, le=200, description="progress updates during the fit")


class EditRequest(MaskRequest):
    steps: int = Field(50, ge=0, le=2000)
    protocol: ProtocolName = "paper"


class ScsRequest(BaseModel):
    labels: list[int]
    n: PositiveInt = Field(2, le=8)
    steps: int = Field(50, ge=0, le=2000)
    n_init: PositiveInt | None = Field(None, le=1000)
    seed: int = Field(0, ge=0)
    protocol: ProtocolName = "paper"


class ImportRequest(BaseModel):
    name: str
    sidecar: dict


def create_app(studio: Studio) -> FastAPI:
    """The FastAPI app over ``studio``: static pages, JSON API, file downloads."""
    app = FastAPI(title="lineargan-edit", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio

    @app.exception_handler(LinearGanError)
    def user_error(_: Request, exc: LinearGanError) -> JSONResponse:
        status = getattr(exc, "status", 409 if isinstance(exc, BusyError) else 400)
        return JSONResponse({"error": exc.problem, "fix": exc.fix}, status_code=status)

    @app.exception_handler(RequestValidationError)
    def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return JSONResponse(
            {
                "error": f"invalid request: {where}: {first['msg']}",
                "fix": "send what the page sends",
            },
            status_code=400,
        )

    def static(name: str, media: str) -> Callable[[], FileResponse]:
        def serve() -> FileResponse:
            with resources.as_file(STATIC / name) as path:
                return FileResponse(path, media_type=media)

        return serve

    app.get("/", include_in_schema=False)(static("index.html", "text/html"))
    app.get("/app.js", include_in_schema=False)(static("app.js", "text/javascript"))
    app.get("/style.css", include_in_schema=False)(static("style.css", "text/css"))

    @app.get("/api/info")
    def info() -> dict:
        return studio.info()

    @app.get("/api/samples")
    def samples(folder: str) -> list[dict]:
        return studio.listing(folder)

    @app.post("/api/samples")
    def sample(req: SampleRequest) -> list[dict]:
        return studio.sample(req.folder, req.n, req.seed)

    @app.get("/api/mask")
    def mask(path: str, source: Literal["file", "reference", "lse"] = "file") -> dict:
        return studio.mask(path, source)

    @app.post("/api/annotations")
    def annotate(req: MaskRequest) -> dict:
        return studio.annotate(req.path, req.labels)

    @app.delete("/api/annotations")
    def remove(path: str) -> dict:
        return studio.remove_annotation(path)

    @app.post("/api/import")
    def import_sidecar(req: ImportRequest) -> dict:
        return studio.import_sidecar(req.name, req.sidecar)

    @app.post("/api/train")
    def train(req: TrainRequest) -> dict:
        return studio.train(req.iterations, req.reports).view()

    @app.post("/api/edit")
    def edit(req: EditRequest) -> dict:
        params = SIEParams(protocol=req.protocol, steps=req.steps)
        return studio.edit(req.path, req.labels, params).view()

    @app.post("/api/scs")
    def scs(req: ScsRequest) -> dict:
        params = SCSParams(protocol=req.protocol, steps=req.steps, n_init=req.n_init, seed=req.seed)
        return studio.scs(req.labels, req.n, params).view()

    @app.get("/api/jobs/{job_id}")
    def job(job_id: int) -> dict:
        return studio.jobs.get(job_id).view()

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: int) -> dict:
        return studio.jobs.cancel(job_id).view()

    @app.get("/api/file")
    def file(path: str, download: bool = False) -> FileResponse:
        target = studio.ws.path(path)
        if not target.is_file():
            raise ApiError(f"no file {path!r} in the workspace", "use a path the app listed", 404)
        media = {".png": "image/png", ".json": "application/json"}.get(target.suffix)
        return FileResponse(
            target,
            media_type=media,
            filename=target.name if download else None,
            headers={"Cache-Control": "no-store"},
        )

    return app


def serve(
    studio: Studio,
    host: str = "127.0.0.1",
    port: int = 0,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``studio`` on ``host:port`` (port 0: a free one) until interrupted; ``ready``
    receives the page's URL once the socket is bound."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise LinearGanError(
            f"cannot listen on {host}:{port} ({exc.strerror})",
            "pick another --port (0: a free one)",
        ) from None
    bound = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{bound}/"
    if ready is not None:
        ready(url)
    config = uvicorn.Config(create_app(studio), log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        studio.jobs.close()
        sock.close()

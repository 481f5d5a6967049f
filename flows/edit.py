"""``lineargan-edit``: semantic control of a GAN for a person, with a few-shot LSE (Appx G).

    lineargan-edit sample --out work/ -n 8                     # images + editable mask PNGs
    # paint the *.mask.png files of a few samples with the palette's colours, then:
    lineargan-edit train-fewshot --masks work/ --out work/lse
    lineargan-edit sample --out work/new -n 4 --lse work/lse   # masks predicted by the LSE
    lineargan-edit edit --sample work/new/seed0-000.json --mask edited.mask.png --lse work/lse --out work/edited
    lineargan-edit scs --mask edited.mask.png --lse work/lse --out work/scs -n 4
    lineargan-edit sefa --lse work/lse --out work/sefa --sample work/new/seed0-000.json
    lineargan-edit serve --workspace work/                     # all of the above in a browser

Every sub-command's flags are generated from its pydantic model (``--help`` lists them); a
malformed input (mask of the wrong size, an unknown palette index or colour, a JPEG mask, a
mask or sample made for another generator, a latent no sampler draws, a broken LSE directory,
an unusable device, an output that is a file, malformed JSON) is a one-line error with exit
status 2. ``train-fewshot`` reports its progress on stderr, ``edit`` how much of the edited
region the result gets right, and every set of masks written has a colour legend beside it.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

from pydantic import BaseModel, Field, NonNegativeInt, PositiveInt
from pydantic_settings import BaseSettings, CliApp, CliSubCommand, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError
from tqdm import tqdm

from flows.cli import run_cli
from lineargan.analyses.scs import SCSParams
from lineargan.analyses.sefa import SefaBrowseParams
from lineargan.analyses.sie import SIEParams
from lineargan.config import ProtocolName
from lineargan.errors import LinearGanError
from lineargan.masks import LEGEND_JSON, LEGEND_PNG, legend_text
from lineargan.models.dlib_face import FACE_CLASSES

LEGEND_HELP = f"""
Mask colours (palette index = class) of the default segmenter, dlib-face68; masks of an LSE
use its classes. Every set of masks written has {LEGEND_PNG} and {LEGEND_JSON} beside it.
{legend_text(FACE_CLASSES)}
"""


class _Generator(BaseModel):
    generator: str = Field("dcgan-digiface", description="registered generator name")
    generator_checkpoint: str | None = Field(None, description="weights file (None: default)")
    generator_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options of the generator adapter (JSON)"
    )
    device: str = "auto"

    def load(self):
        from lineargan.config import options_json
        from tasks.editing import load_generator

        return load_generator(
            self.generator,
            self.generator_checkpoint,
            self.device,
            options_json(self.generator_options),
        )


class _Latent(BaseModel):
    protocol: ProtocolName = Field(
        "paper", description="learning rate etc. of the paper or of the authors' code"
    )
    steps: int = Field(50, ge=0, description="Adam steps")
    lr: float | None = Field(None, gt=0, description="learning rate (None: the protocol's)")


class Sample(_Generator):
    """Sample images; save each as PNG with its mask (editable palette PNG) and latent."""

    out: str = Field(description="output directory")
    n: PositiveInt = 4
    seed: NonNegativeInt | None = Field(
        None,
        description="None: the seed after every one already drawn in --out or for the LSE's "
        "training samples (new faces, nothing overwritten)",
    )
    lse: str | None = Field(None, description="LSE directory predicting the masks")
    segmenter: str = Field(
        "dlib-face68", description="without --lse: segmenter whose masks start the annotation"
    )

    def cli_cmd(self) -> None:
        from lineargan.models.registry import cached_segmenter
        from tasks.editing import default_seed, output_dir, sample_images

        seed = self.seed
        if seed is None:
            seed = default_seed(str(output_dir(self.out)), self.lse)
            print(f"seed {seed} (the first not drawn before; --seed picks another)")
        segmenter = None if self.lse else cached_segmenter(self.segmenter)
        for s in sample_images(self.load(), self.out, self.n, seed, self.lse, segmenter):
            print(f"{s.image}  mask {s.mask}")


class TrainFewshot(_Generator):
    """Train a few-shot LSE on annotated masks (*.mask.png files beside their .json)."""

    masks: str = Field(description="directory of annotated samples")
    out: str = Field(description="directory of the trained LSE")
    iterations: PositiveInt | None = Field(None, description="None: Table 2's for this N")
    seed: int = Field(0, ge=0)

    def cli_cmd(self) -> None:
        from tasks.editing import train_fewshot_from_masks

        meta = train_fewshot_from_masks(
            self.load(), self.masks, self.out, self.iterations, self.seed, FitProgress()
        )
        print(
            f"{meta['n_shot']}-shot LSE: {meta['iterations']} iterations, final loss "
            f"{meta['final_loss']:.4f} -> {self.out}"
        )


class Edit(_Generator, _Latent):
    """Semantic Image Editing: the image nearest a sample whose mask matches an edited mask."""

    sample: str = Field(description="the sample's .json (or its .png / .mask.png)")
    mask: str = Field(description="the edited mask PNG")
    lse: str = Field(description="LSE directory")
    out: str = Field(description="output path stem (writes .png, .mask.png, .json)")
    segmenter: str | None = Field(
        "dlib-face68",
        description="reference segmenter scoring the edit (its classes must be the LSE's; "
        "null: the LSE's score only)",
    )

    def cli_cmd(self) -> None:
        from lineargan.models.registry import cached_segmenter
        from tasks.editing import edit_sample

        params = SIEParams(protocol=self.protocol, steps=self.steps, lr=self.lr)
        reference = cached_segmenter(self.segmenter) if self.segmenter else None
        edited = edit_sample(
            self.load(), self.sample, self.mask, self.lse, self.out, params, reference
        )
        print(f"{edited.sample.image}  mask {edited.sample.mask}")
        print(score_line(edited.score))


class Scs(_Generator, _Latent):
    """Semantic-Conditional Sampling: images whose masks match a given mask."""

    mask: str = Field(description="the target mask PNG")
    lse: str = Field(description="LSE directory")
    out: str = Field(description="output directory")
    n: PositiveInt = 4
    n_init: PositiveInt | None = Field(None, description="candidates (None: the protocol's)")
    seed: int = Field(0, ge=0)

    def cli_cmd(self) -> None:
        from tasks.editing import sample_for_mask

        params = SCSParams(
            protocol=self.protocol, steps=self.steps, lr=self.lr, n_init=self.n_init, seed=self.seed
        )
        for s in sample_for_mask(self.load(), self.mask, self.lse, self.out, self.n, params):
            print(f"{s.image}  mask {s.mask}")


class Sefa(_Generator):
    """SeFa's closed-form directions: a grid per latent (rows = directions, columns = α, image
    over its mask) and what each direction does to every class."""

    out: str = Field(description="output directory")
    lse: str | None = Field(None, description="LSE directory labelling the images")
    segmenter: str | None = Field(
        "dlib-face68",
        description="segmenter labelling the images without --lse, scoring them beside it "
        "(its classes must be the LSE's; null: the LSE alone)",
    )
    sample: str | None = Field(None, description="a sample's .json (None: draw --n latents)")
    options: SefaBrowseParams = Field(
        default_factory=SefaBrowseParams,
        description="directions, alphas, layers (all/coarse/middle/fine/indices), module, n, "
        "seed, normalize, order, dominance, enrichment (JSON)",
    )

    def cli_cmd(self) -> None:
        from lineargan.models.registry import cached_segmenter
        from tasks.editing import browse_sefa

        segmenter = cached_segmenter(self.segmenter) if self.segmenter else None
        done = browse_sefa(self.load(), self.out, self.options, self.lse, segmenter, self.sample)
        for r in done.rows.itertuples():
            print(
                f"direction {r.direction}: eigenvalue {r.eigenvalue:.2f}, {r.name}; "
                f"{r.changed_at_max:.0%} of the pixels relabelled at the largest α"
                + (f", largest area change {r.largest_change}" if r.largest_change else "")
            )
        print(f"grids {', '.join(str(g) for g in done.grids)}")
        print(f"per-class numbers {done.semantics}, directions {done.directions}")


class Serve(_Generator):
    """The browser app: annotate, train the few-shot LSE live, edit (SIE) and sample (SCS)."""

    workspace: str = Field(
        "lineargan-workspace", description="the one directory the app writes (created)"
    )
    port: int = Field(0, ge=0, le=65535, description="port to listen on (0: a free one)")
    host: str = Field(
        "127.0.0.1",
        description="address to bind; anything but 127.0.0.1 exposes the app (and the "
        "workspace's files) to other machines: only with an explicit --host",
    )
    segmenter: str = Field(
        "dlib-face68", description="reference segmenter: the masks annotation starts from"
    )

    def cli_cmd(self) -> None:
        from flows.webapp.server import Studio, serve
        from lineargan.models.registry import cached_segmenter
        from tasks.editing import output_dir

        output_dir(self.workspace)
        studio = Studio(self.load(), cached_segmenter(self.segmenter), self.workspace)
        serve(studio, self.host, self.port, lambda url: print(f"serving on {url}", flush=True))


class FitProgress:
    """``train-fewshot``'s progress on stderr, about ten lines: iteration, loss and the time
    left at the rate so far (above the fit's own bar on a terminal, through ``tqdm.write``)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.first: tuple[float, int] | None = None  # (time, iteration) of the first report

    def __call__(self, iteration: int, total: int, loss: float) -> None:
        now = time.monotonic()
        elapsed = now - self.start
        if self.first is None or iteration <= self.first[1]:
            self.first = self.first or (now, iteration)
            rate = elapsed / max(iteration, 1)  # includes the setup: an overestimate at first
        else:  # the pace of the iterations alone
            rate = (now - self.first[0]) / (iteration - self.first[1])
        left = rate * (total - iteration)
        tqdm.write(
            f"train-fewshot: iteration {iteration}/{total}, loss {loss:.4f}, "
            f"{duration(elapsed)} so far, about {duration(left)} left",
            file=sys.stderr,
        )


def duration(seconds: float) -> str:
    """``4 min 05 s`` / ``12 s``: a time a person reads at a glance."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def score_line(score) -> str:
    """One line on how much of the edited region has the target class after an edit."""
    if score is None:
        return "edit: the edited mask equals the LSE's mask of the sample; nothing was edited"
    line = (
        f"edit: {score.region_px} px of the mask changed class; of those, {score.lse:.0%} "
        "have the target class by the LSE"
    )
    if score.segmenter is None:
        return line
    line += (
        f", {score.reference:.0%} by {score.segmenter} ({score.reference_before:.0%} before "
        "the edit)"
    )
    if not score.detected:  # its labels then come from a fallback box: say so
        line += f"; {score.segmenter}'s detector found no face in the edited image"
    return line


class LinearGanEdit(BaseSettings):
    """Sample, annotate, train a few-shot LSE, edit (SIE), sample for a mask (SCS) and browse
    SeFa's directions."""

    model_config = SettingsConfigDict(
        cli_prog_name="lineargan-edit", cli_kebab_case=True, cli_implicit_flags=True
    )

    sample: CliSubCommand[Sample] = Field(description=Sample.__doc__)
    train_fewshot: CliSubCommand[TrainFewshot] = Field(description=TrainFewshot.__doc__)
    edit: CliSubCommand[Edit] = Field(description=Edit.__doc__)
    scs: CliSubCommand[Scs] = Field(description=Scs.__doc__)
    sefa: CliSubCommand[Sefa] = Field(description=Sefa.__doc__)
    serve: CliSubCommand[Serve] = Field(description=Serve.__doc__)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_):
        return (init_settings,)  # the command line only: no environment variables

    def cli_cmd(self) -> None:
        CliApp.run_subcommand(self)


# the legend in every --help; after LinearGanEdit took the one-line descriptions for its list
for _command in (LinearGanEdit, Sample, TrainFewshot, Edit, Scs, Sefa, Serve):
    _command.__doc__ = f"{_command.__doc__}\n{LEGEND_HELP}"

_PARSE_ERROR = re.compile(r"Parsing error encountered for (?:\w+\.)*(\w+): (.*)", re.DOTALL)


def option_error(exc: SettingsError) -> LinearGanError:
    """A flag value pydantic-settings could not parse (malformed JSON in a dict-valued flag
    such as ``--generator-options``) as a one-line error naming the flag."""
    match = _PARSE_ERROR.match(str(exc))
    if match is None:
        return LinearGanError(f"cannot parse the command line ({exc})", "see --help")
    flag = "--" + match.group(1).replace("_", "-")
    detail = " ".join(match.group(2).split())
    if "unpack" in detail:  # valid JSON of another type, read as key=value pairs and failed
        detail = "a JSON value but not an object"
    return LinearGanError(
        f"{flag} is not a valid JSON object ({detail})",
        f"""pass a JSON object in single quotes, e.g. {flag} '{{"name": 1}}'""",
    )


def _run(argv: list[str] | None) -> None:
    try:
        CliApp.run(LinearGanEdit, cli_args=argv)
    except SettingsError as exc:
        raise option_error(exc) from None


def main(argv: list[str] | None = None) -> None:
    run_cli(lambda: _run(argv))


if __name__ == "__main__":
    main()

"""``lineargan-edit``: semantic control of a GAN for a person, with a few-shot LSE (Appx G).

    lineargan-edit sample --out work/ -n 8                     # images + editable mask PNGs
    # paint the *.mask.png files of a few samples with the palette's colours, then:
    lineargan-edit train-fewshot --masks work/ --out work/lse
    lineargan-edit sample --out work/new -n 4 --lse work/lse   # masks predicted by the LSE
    lineargan-edit edit --sample work/new/seed0-000.json --mask edited.mask.png --lse work/lse --out work/edited
    lineargan-edit scs --mask edited.mask.png --lse work/lse --out work/scs -n 4

Every sub-command's flags are generated from its pydantic model (``--help`` lists them); a
malformed input (mask of the wrong size, an unknown palette index or colour, a mask or sample
made for another generator) is a one-line error with exit status 2.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, PositiveInt
from pydantic_settings import BaseSettings, CliApp, CliSubCommand, SettingsConfigDict

from flows.cli import run_cli
from lineargan.analyses.scs import SCSParams
from lineargan.analyses.sie import SIEParams
from lineargan.config import ProtocolName


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
    seed: int = Field(0, ge=0)
    lse: str | None = Field(None, description="LSE directory predicting the masks")
    segmenter: str = Field(
        "dlib-face68", description="without --lse: segmenter whose masks start the annotation"
    )

    def cli_cmd(self) -> None:
        from lineargan.models.registry import cached_segmenter
        from tasks.editing import sample_images

        segmenter = None if self.lse else cached_segmenter(self.segmenter)
        for s in sample_images(self.load(), self.out, self.n, self.seed, self.lse, segmenter):
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
            self.load(), self.masks, self.out, self.iterations, self.seed
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

    def cli_cmd(self) -> None:
        from tasks.editing import edit_sample

        params = SIEParams(protocol=self.protocol, steps=self.steps, lr=self.lr)
        s = edit_sample(self.load(), self.sample, self.mask, self.lse, self.out, params)
        print(f"{s.image}  mask {s.mask}")


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


class LinearGanEdit(BaseSettings):
    """Sample, annotate, train a few-shot LSE, edit (SIE) and sample for a mask (SCS)."""

    model_config = SettingsConfigDict(
        cli_prog_name="lineargan-edit", cli_kebab_case=True, cli_implicit_flags=True
    )

    sample: CliSubCommand[Sample] = Field(description=Sample.__doc__)
    train_fewshot: CliSubCommand[TrainFewshot] = Field(description=TrainFewshot.__doc__)
    edit: CliSubCommand[Edit] = Field(description=Edit.__doc__)
    scs: CliSubCommand[Scs] = Field(description=Scs.__doc__)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_):
        return (init_settings,)  # the command line only: no environment variables

    def cli_cmd(self) -> None:
        CliApp.run_subcommand(self)


def main(argv: list[str] | None = None) -> None:
    run_cli(lambda: CliApp.run(LinearGanEdit, cli_args=argv))


if __name__ == "__main__":
    main()

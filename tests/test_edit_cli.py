"""``lineargan-edit``: the whole path a person takes (sample, annotate, train a few-shot LSE,
edit, sample for a mask, browse SeFa's directions) on the embedded model, and its one-line errors."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flows.edit import main
from lineargan.analyses.sie import EditSpec, apply_edit
from lineargan.figures import palette
from lineargan.masks import MaskInfo, load_mask_png, read_mask_info, save_mask_png

CLASSES = ("background", "skin", "eyebrows", "eyes", "nose", "lips", "mouth")


def run(argv: list[str]) -> None:
    main(argv)


def fails(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Fix:" in err
    return err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Two annotated samples and a 2-shot LSE trained on them (its stderr in train.log)."""
    root = tmp_path_factory.mktemp("edit")
    run(["sample", "--out", str(root / "annotated"), "-n", "2", "--device", "cpu"])
    with redirect_stderr(io.StringIO()) as log:
        run(
            [
                "train-fewshot",
                "--masks",
                str(root / "annotated"),
                "--out",
                str(root / "lse"),
                "--iterations",
                "30",
                "--device",
                "cpu",
            ]
        )
    (root / "train.log").write_text(log.getvalue())
    return root


def test_sample_writes_image_mask_and_latent(workdir):
    masks = sorted((workdir / "annotated").glob("*.mask.png"))
    assert len(masks) == 2
    info = read_mask_info(masks[0])
    assert info is not None and info.class_names == CLASSES and info.generator == "dcgan-digiface"
    sidecar = json.loads((workdir / "annotated" / "seed0-000.json").read_text())
    assert len(sidecar["latent"]) == 100 and sidecar["latent_space"] == "z"
    with Image.open(workdir / "annotated" / "seed0-000.png") as image:
        assert image.size == (64, 64)
    meta = json.loads((workdir / "lse" / "config.json").read_text())["metadata"]
    assert meta["n_shot"] == 2 and meta["iterations"] == 30


def test_edit_and_scs_with_the_trained_lse(workdir, capsys):
    run(
        [
            "sample",
            "--out",
            str(workdir / "new"),
            "-n",
            "1",
            "--seed",
            "3",
            "--lse",
            str(workdir / "lse"),
            "--device",
            "cpu",
        ]
    )
    mask_path = workdir / "new" / "seed3-000.mask.png"
    labels = load_mask_png(mask_path, CLASSES, 64)
    target, region, _ = apply_edit(labels, EditSpec(op="enlarge", class_rank=0, amount=3), None)
    assert region.any()
    edited = save_mask_png(workdir / "edited.mask.png", target, read_mask_info(mask_path))
    out = workdir / "out" / "edited"
    run(
        [
            "edit",
            "--sample",
            str(workdir / "new" / "seed3-000.json"),
            "--mask",
            str(edited),
            "--lse",
            str(workdir / "lse"),
            "--out",
            str(out),
            "--steps",
            "5",
            "--device",
            "cpu",
        ]
    )
    edited_sidecar = json.loads((workdir / "out" / "edited.json").read_text())
    new_latent = edited_sidecar["latent"]
    old_latent = json.loads((workdir / "new" / "seed3-000.json").read_text())["latent"]
    assert not np.allclose(new_latent, old_latent)  # the edit moved the latent
    # the score printed is the share of the changed pixels that now have the target class
    score = edited_sidecar["edit_score"]
    changed = target != labels  # the sample's mask is the LSE's: the region the person edited
    result = load_mask_png(workdir / "out" / "edited.mask.png", CLASSES, 64)
    assert score["region_px"] == int(changed.sum())
    assert score["lse"] == pytest.approx(float((result[changed] == target[changed]).mean()))
    assert score["segmenter"] == "dlib-face68" and 0 <= score["reference"] <= 1
    printed = capsys.readouterr().out
    assert f"edit: {int(changed.sum())} px of the mask changed class" in printed
    assert f"{score['lse']:.0%} have the target class by the LSE" in printed
    assert f"{score['reference']:.0%} by dlib-face68" in printed
    run(
        [
            "scs",
            "--mask",
            str(edited),
            "--lse",
            str(workdir / "lse"),
            "--out",
            str(workdir / "scs"),
            "-n",
            "2",
            "--steps",
            "3",
            "--n-init",
            "4",
            "--device",
            "cpu",
        ]
    )
    assert len(list((workdir / "scs").glob("*.mask.png"))) == 2
    assert "scs01.png" in capsys.readouterr().out
    for folder in ("new", "out", "scs"):  # every set of masks written has its legend
        assert_legend(workdir / folder)


def assert_legend(folder: Path) -> None:
    """``folder`` holds the palette legend of the face classes, as JSON and as PNG."""
    legend = json.loads((folder / "legend.json").read_text())["classes"]
    assert [c["name"] for c in legend] == list(CLASSES)
    assert [c["rgb"] for c in legend] == palette(len(CLASSES)).tolist()
    with Image.open(folder / "legend.png") as image:
        assert image.height >= 20 * len(CLASSES)


def test_malformed_inputs_are_one_line_errors(workdir, tmp_path, capsys):
    lse = str(workdir / "lse")
    small = save_mask_png(tmp_path / "small.png", np.zeros((32, 32), np.uint8), MaskInfo(CLASSES))
    err = fails(["scs", "--mask", str(small), "--lse", lse, "--out", str(tmp_path)], capsys)
    assert "32×32 px" in err
    foreign = save_mask_png(
        tmp_path / "foreign.png", np.zeros((64, 64), np.uint8), MaskInfo(CLASSES, "x", "f" * 64)
    )
    err = fails(["scs", "--mask", str(foreign), "--lse", lse, "--out", str(tmp_path)], capsys)
    assert "another generator" in err
    sample = str(workdir / "annotated" / "seed0-000.json")
    mask = str(workdir / "annotated" / "seed0-000.mask.png")
    argv = ["edit", "--sample", sample, "--mask", mask, "--lse", lse, "--out", str(tmp_path / "o")]
    err = fails([*argv, "--generator", "dcgan-random"], capsys)
    assert "another generator" in err
    err = fails(
        ["scs", "--mask", str(small), "--lse", str(tmp_path / "nope"), "--out", "o"], capsys
    )
    assert "no trained LSE" in err
    # a latent of the same size drawn in another space is not silently read in this one
    other = tmp_path / "other-space.json"
    other.write_text(json.dumps({**json.loads(Path(sample).read_text()), "latent_space": "mixwp"}))
    err = fails([*argv[:2], str(other), *argv[3:]], capsys)
    assert "sampled in latent space 'mixwp'" in err and '"latent_space": "mixwp"' in err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    err = fails([*argv[:2], str(broken), *argv[3:]], capsys)
    assert "not a lineargan sample sidecar" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = fails(["train-fewshot", "--masks", str(empty), "--out", str(tmp_path / "l")], capsys)
    assert "no *.mask.png" in err


def test_the_legend_is_beside_annotated_masks_and_in_help(workdir, capsys):
    assert_legend(workdir / "annotated")
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "  1  #1f77b4  skin" in capsys.readouterr().out


def test_train_fewshot_reports_progress(workdir):
    lines = (workdir / "train.log").read_text().splitlines()
    assert len(lines) == 10  # about every tenth of the fit
    assert lines[0].startswith("train-fewshot: iteration 3/30, loss ")
    assert lines[-1].startswith("train-fewshot: iteration 30/30, loss ") and "left" in lines[-1]


def test_sample_defaults_to_seeds_not_drawn_before(workdir):
    lse = ["--lse", str(workdir / "lse"), "--device", "cpu"]
    out = workdir / "fresh"
    run(["sample", "--out", str(out), "-n", "1", *lse])
    # the LSE was trained on seed 0's samples: predicting their masks again shows nothing new
    assert [p.name for p in out.glob("seed*.json")] == ["seed1-000.json"]
    run(["sample", "--out", str(out), "-n", "1", *lse])  # and nothing in --out is overwritten
    assert sorted(p.name for p in out.glob("seed*.json")) == ["seed1-000.json", "seed2-000.json"]
    sidecar = json.loads((out / "seed2-000.json").read_text())
    assert (sidecar["seed"], sidecar["index"]) == (2, 0)
    run(["sample", "--out", str(out), "-n", "1", "--seed", "0", *lse])  # an explicit seed wins
    assert (out / "seed0-000.json").exists()


def edit_argv(workdir: Path, tmp_path: Path, **change: str) -> list[str]:
    """An ``edit`` command line on the annotated sample; ``change`` replaces flags' values."""
    flags = {
        "sample": str(workdir / "annotated" / "seed0-000.json"),
        "mask": str(workdir / "annotated" / "seed0-000.mask.png"),
        "lse": str(workdir / "lse"),
        "out": str(tmp_path / "o"),
        **change,
    }
    return ["edit", *(x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", v))]


def test_a_broken_lse_directory_is_a_one_line_error(workdir, tmp_path, capsys):
    truncated = tmp_path / "truncated-lse"
    shutil.copytree(workdir / "lse", truncated)
    weights = truncated / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    err = fails(edit_argv(workdir, tmp_path, lse=str(truncated)), capsys)
    assert "weights.safetensors is not a readable safetensors file" in err
    assert "lineargan-edit train-fewshot" in err
    malformed = tmp_path / "malformed-lse"
    shutil.copytree(workdir / "lse", malformed)
    (malformed / "config.json").write_text('{"class_name": "LSE", ')
    err = fails(edit_argv(workdir, tmp_path, lse=str(malformed)), capsys)
    assert "config.json is not a readable" in err


def test_an_output_that_is_a_file_is_a_one_line_error(workdir, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    mask, lse = str(workdir / "annotated" / "seed0-000.mask.png"), str(workdir / "lse")
    for argv in (
        ["sample", "--out", str(a_file), "-n", "1"],
        ["train-fewshot", "--masks", str(workdir / "annotated"), "--out", str(a_file)],
        ["scs", "--mask", mask, "--lse", lse, "--out", str(a_file)],
        edit_argv(workdir, tmp_path, out=str(a_file / "edited")),
    ):
        assert f"output {a_file} is a file, not a directory" in fails(argv, capsys)


@pytest.mark.parametrize("device", ["tpu", "meta", "cuda:99"])
def test_a_device_torch_cannot_use_is_a_one_line_error(workdir, tmp_path, capsys, device):
    err = fails([*edit_argv(workdir, tmp_path), "--device", device], capsys)
    assert f"device {device!r}" in err and "use one of: auto, cpu" in err


@pytest.mark.parametrize(
    ("latent", "needle"),
    [
        (["0.1"] * 100, "latent is not a list of numbers"),
        ([1e30] * 100, "a value of 1e+30"),
        ([float("nan")] * 100, "100 of its 100 values are not finite"),
        ([5.0] * 100, "a norm of 50; the generator's z latents (100 values) stay below"),
    ],
)
def test_a_latent_no_sampler_draws_is_refused(workdir, tmp_path, capsys, latent, needle):
    sidecar = json.loads((workdir / "annotated" / "seed0-000.json").read_text())
    path = tmp_path / "sample.json"
    path.write_text(json.dumps({**sidecar, "latent": latent}))
    assert needle in fails(edit_argv(workdir, tmp_path, sample=str(path)), capsys)


def test_a_jpeg_mask_is_refused_naming_png(workdir, tmp_path, capsys):
    jpeg = tmp_path / "mask.jpg"
    Image.open(workdir / "annotated" / "seed0-000.mask.png").convert("RGB").save(jpeg)
    err = fails(edit_argv(workdir, tmp_path, mask=str(jpeg)), capsys)
    assert "is a JPEG image" in err and "save the mask as PNG" in err


@pytest.mark.parametrize("options", ["{not json", "[1]"])
def test_malformed_json_options_are_one_line_errors(workdir, tmp_path, capsys, options):
    err = fails([*edit_argv(workdir, tmp_path), "--generator-options", options], capsys)
    assert "--generator-options is not a valid JSON object" in err


def test_sefa_browses_the_directions_of_a_sample(workdir, capsys):
    """SeFa on a sample's latent, labelled by the trained LSE and scored by dlib: a grid with
    a row per direction and the per-class numbers of every direction and α."""
    out = workdir / "sefa"
    options = json.dumps({"directions": 2, "alphas": [-3, 0, 3]})
    sample = str(workdir / "annotated" / "seed0-000.json")
    argv = ["sefa", "--lse", str(workdir / "lse"), "--sample", sample, "--device", "cpu"]
    run([*argv, "--out", str(out), "--options", options])
    printed = capsys.readouterr().out
    assert "direction 0: eigenvalue" in printed and "direction 1:" in printed
    rows = pd.read_csv(out / "sefa_semantics.csv")
    assert set(rows.labeller) == {"LSE", "dlib-face68"} and set(rows.direction) == {0, 1}
    assert set(rows.class_name) == set(CLASSES) and (rows[rows.alpha == 0].changed == 0).all()
    directions = json.loads((out / "sefa_directions.json").read_text())
    assert [d["direction"] for d in directions] == [0, 1] and len(directions[0]["vector"]) == 100
    with Image.open(out / "sefa-0.png") as grid:  # 2 rows of image over mask, 3 columns
        assert grid.size[1] > 2 * 2 * 64 * 2 and grid.size[0] > 3 * 64 * 2
    assert not (out / "sefa-1.png").exists()  # one latent, one grid
    err = fails(["sefa", "--out", str(out), "--segmenter", "null", "--device", "cpu"], capsys)
    assert "--lse" in err

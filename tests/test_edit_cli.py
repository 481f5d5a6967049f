"""``lineargan-edit``: the whole path a person takes (sample, annotate, train a few-shot LSE,
edit, sample for a mask) on the embedded model, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.edit import main
from lineargan.analyses.sie import EditSpec, apply_edit
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
    """Two annotated samples and a 2-shot LSE trained on them."""
    root = tmp_path_factory.mktemp("edit")
    run(["sample", "--out", str(root / "annotated"), "-n", "2", "--device", "cpu"])
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
    new_latent = json.loads((workdir / "out" / "edited.json").read_text())["latent"]
    old_latent = json.loads((workdir / "new" / "seed3-000.json").read_text())["latent"]
    assert not np.allclose(new_latent, old_latent)  # the edit moved the latent
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

"""SCS from a user's folder of target masks (the paper's face protocol: human-annotated
CelebAMask-HQ masks), on the embedded DCGAN with dlib labels: masks written from the default's
own targets give the default's numbers, directly and through a class map from another class
list at another resolution; a folder's content is in the analysis key; a bad folder is one line
before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.preflight import check_run
from lineargan.analyses.fewshot import FewShotParams
from lineargan.analyses.scs import SCSParams, choose_targets
from lineargan.config import RunConfig
from lineargan.errors import LinearGanError
from lineargan.masks import MaskInfo, TargetMasks, read_target_masks, save_mask_png
from storage.tables import read_table_part
from tasks.analyses.runner import analysis_key, run_and_finish

FEWSHOT = FewShotParams(shots=(1,), iterations=(20,), repeats=1, methods=("converged",))
SMALL = dict(targets=3, samples=2, steps=3, shots=(1,), repeats=1, fewshot=FEWSHOT)
# A user's class list (CelebAMask-HQ-like): left/right parts, two lips, and hair, which the
# run's dlib classes have no name for.
USER_NAMES = ["bg", "face", "brows", "l_eye", "r_eye", "nose", "u_lip", "l_lip", "mouth", "hair"]
PALETTE = np.random.default_rng(0).integers(0, 256, 768).astype(np.uint8).tolist()
USER_MAP = {"face": "skin", "brows": "eyebrows", "l_eye": "eyes", "r_eye": "eyes",
            "u_lip": "lips", "l_lip": "lips"}  # fmt: skip


@pytest.fixture
def default_targets(ctx) -> tuple[np.ndarray, np.ndarray]:
    """The eval-store indices and reference labels of the default's targets for SMALL."""
    _, evals = ctx.stores()
    params = SCSParams(**SMALL, baseline="none")
    ids = choose_targets(
        evals.spec.n, evals.detected_flags(), params.targets, params.target_source, params.seed
    )
    return ids, evals.read_selection(ids, images=False).labels


def write_run_masks(folder: Path, labels: np.ndarray, classes: tuple[str, ...]) -> Path:
    """The labels as the run's class ids: palette PNGs as lineargan-edit saves them, one
    plain greyscale label PNG and one 16-bit one."""
    for t, mask in enumerate(labels):
        if t == len(labels) - 1:
            Image.fromarray(mask, mode="L").save(folder / f"t{t}.png")
        elif t == len(labels) - 2:
            Image.fromarray(mask.astype(np.uint16)).save(folder / f"t{t}.png")
        else:
            save_mask_png(folder / f"t{t}.png", mask, MaskInfo(classes))
    return folder


def write_user_masks(folder: Path, labels: np.ndarray, classes: tuple[str, ...]) -> Path:
    """The labels in USER_NAMES' ids at twice the resolution (nearest), eyes and lips split
    in two user classes, and a band of "hair" over background pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = {name: k for k, name in enumerate(USER_NAMES)}
    for t, mask in enumerate(labels):
        user = np.zeros_like(mask)
        for k, name in enumerate(classes):
            own = {"background": "bg", "skin": "face", "eyebrows": "brows", "eyes": "l_eye",
                   "lips": "u_lip"}.get(name, name)  # fmt: skip
            user[mask == k] = ids[own]
        right = np.zeros(mask.shape, bool)
        right[:, mask.shape[1] // 2 :] = True
        user[(mask == classes.index("eyes")) & right] = ids["r_eye"]
        lower = np.zeros(mask.shape, bool)
        lower[mask.shape[0] * 3 // 4 :] = True
        user[(mask == classes.index("lips")) & lower] = ids["l_lip"]
        user[:4][mask[:4] == 0] = ids["hair"]  # unmapped: background, as dlib labels hair
        image = Image.fromarray(np.kron(user, np.ones((2, 2), np.uint8)), mode="P")
        image.putpalette(PALETTE)  # the user's own colours: pixel values stay the class ids
        image.save(folder / f"mask-{t:02d}.png")
    return folder


def run_scs(ctx, **fields):
    params = SCSParams(**SMALL, baseline="none", **fields)
    result = run_and_finish("scs", ctx, params)
    return params, read_table_part(ctx.results_root, "scs_samples", result.key)


def test_masks_from_the_default_targets_give_the_default_numbers(ctx, default_targets, tmp_path):
    ids, labels = default_targets
    _, evals = ctx.stores()
    classes = evals.spec.class_names
    folder = write_run_masks(tmp_path / "masks", labels, classes)
    _, default = run_scs(ctx)
    params, rows = run_scs(ctx, target_masks=str(folder))
    assert set(default["target_file"].isna()) == {True}
    assert rows["target_file"].tolist() == [f"t{t}.png" for t in rows["target"]]
    assert rows["target_index"].tolist() == rows["target"].tolist()  # position in the folder
    assert np.array_equal(default["target_index"].unique(), ids)
    # same targets, same seeded candidates: the same samples and agreements
    for column in ("agreement", "agreement_initial", "candidate"):
        assert rows[column].tolist() == default[column].tolist(), column
    assert params.target_masks.folder == str(folder) and len(params.target_masks.digest) == 64

    # a class map from another class list at twice the resolution reads back the same labels
    user = write_user_masks(tmp_path / "user", labels, classes)
    mapping = tmp_path / "classes.yaml"
    mapping.write_text(json.dumps({"names": USER_NAMES, "map": USER_MAP}))
    mapped = TargetMasks(folder=str(user), classes=str(mapping))
    read, names = read_target_masks(mapped, classes, resolution=labels.shape[-1])
    assert names == ["mask-00.png", "mask-01.png", "mask-02.png"]
    assert np.array_equal(np.stack(read), labels)  # hair → background, where dlib has it
    inline = {"folder": str(user), "classes": {"names": USER_NAMES, "map": USER_MAP}}
    _, from_map = run_scs(ctx, target_masks=inline)
    assert from_map["agreement"].tolist() == default["agreement"].tolist()
    assert set(from_map["target_file"]) == set(names)


def test_the_folder_content_is_in_the_analysis_key(ctx, default_targets, tmp_path):
    _, labels = default_targets
    train, evals = ctx.stores()
    folder = write_run_masks(tmp_path / "masks", labels, evals.spec.class_names)
    first = SCSParams(**SMALL, target_masks=str(folder))
    assert "target_masks" not in SCSParams(**SMALL).model_dump(mode="json")  # old keys kept
    edited = labels[0].copy()
    edited[:8, :8] = 1
    save_mask_png(folder / "t0.png", edited, MaskInfo(evals.spec.class_names))
    second = SCSParams(**SMALL, target_masks=str(folder))
    keys = {analysis_key("scs", p, (train, evals)) for p in (first, second)}
    assert len(keys) == 2
    # parameters made before the change refuse to read the changed folder
    with pytest.raises(LinearGanError, match="changed after"):
        read_target_masks(first.target_masks, evals.spec.class_names)
    # as a JSON round trip (a worker's copy) keeps the digest it was made with
    again = SCSParams.model_validate(first.model_dump(mode="json"))
    assert again.target_masks.digest == first.target_masks.digest


def _bad_folders(root: Path) -> list[tuple[str, object, str]]:
    """(name, target_masks, expected message) for each way a folder can be wrong."""
    labels = np.zeros((64, 64), np.uint8)
    labels[20:40, 20:40] = 1
    cases: list[tuple[str, object, str]] = []

    def folder(name: str) -> Path:
        path = root / name
        path.mkdir()
        Image.fromarray(labels, mode="L").save(path / "ok.png")
        return path

    cases.append(("missing", str(root / "nowhere"), "does not exist"))
    (root / "empty").mkdir()
    (root / "empty" / "legend.json").write_text("{}")  # not a mask
    cases.append(("empty", str(root / "empty"), "holds no mask files"))
    Image.fromarray(np.stack([labels] * 3, -1)).save(folder("jpeg") / "b.jpg", format="JPEG")
    cases.append(("jpeg", str(root / "jpeg"), "JPEG image"))
    (folder("garbage") / "b.png").write_bytes(b"not a png at all")
    cases.append(("garbage", str(root / "garbage"), "not a readable PNG"))
    Image.fromarray(np.stack([labels] * 3, -1)).save(folder("rgb") / "b.png")
    cases.append(("rgb", str(root / "rgb"), "3 channel"))
    Image.fromarray(labels[:, :32], mode="L").save(folder("oblong") / "b.png")
    cases.append(("oblong", str(root / "oblong"), "32×64 px"))
    Image.fromarray(np.full((64, 64), 300, np.uint16)).save(folder("wide") / "b.png")
    cases.append(("wide", str(root / "wide"), "pixel value 300"))
    Image.fromarray(np.full((64, 64), 9, np.uint8), mode="L").save(folder("ids") / "b.png")
    cases.append(("ids", str(root / "ids"), r"pixel value\(s\) \[9\]"))
    unknown = {"folder": str(folder("names")), "classes": {"map": {"1": "hair"}}}
    cases.append(("names", unknown, "'hair', which is not a class of the run"))
    stray = {"folder": str(root / "names"), "classes": {"names": ["bg", "x"], "map": {"y": None}}}
    cases.append(("stray", stray, "'y', which is not a class of the masks"))
    return cases


def test_a_bad_folder_is_one_line_before_the_run_starts(tmp_path):
    config = dict(
        profile="smoke",
        analyses=["scs"],
        data_root=str(tmp_path / "data"),
        results_root=str(tmp_path / "results"),
    )
    for name, masks, message in _bad_folders(tmp_path):
        run = RunConfig(**config, analysis_params={"scs": {"target_masks": masks}})
        with pytest.raises(LinearGanError, match=message) as err:
            check_run(run)
        assert "\n" not in str(err.value), name
    assert not (tmp_path / "data").exists()  # nothing was built


def test_the_command_line_takes_a_folder_and_refuses_an_empty_one(tmp_path, capsys):
    from flows.reproduce import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["--profile", "smoke", "--set", f"scs.target_masks={tmp_path / 'empty'}",
              "--data-root", str(tmp_path / "data"), "--results-root", str(tmp_path / "res")])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no mask files" in err, err


def test_a_deployment_passes_the_folder_in_its_config(default_targets, tmp_path, ctx):
    """A deployment's parameters are JSON (prefect.yaml, ``--param config=...``): the folder
    and an inline class map reach SCS through ``analysis_params``, digested by the run's check."""
    _, labels = default_targets
    _, evals = ctx.stores()
    user = write_user_masks(tmp_path / "user", labels, evals.spec.class_names)
    parameters = {
        "profile": "smoke",
        "analyses": ["scs"],
        "data_root": str(tmp_path / "data"),
        "results_root": str(tmp_path / "results"),
        "analysis_params": {
            "scs": {"target_masks": {"folder": str(user), "classes": {"names": USER_NAMES}}}
        },
    }
    scs = check_run(RunConfig.model_validate(json.loads(json.dumps(parameters))))["scs"]
    masks = scs.target_masks
    assert masks.folder == str(user) and masks.classes.names == tuple(USER_NAMES)
    assert len(masks.digest) == 64 and scs.model_dump(mode="json")["target_masks"] == {
        "folder": str(user),
        "classes": {"names": USER_NAMES, "map": {}},
        "digest": masks.digest,
    }

"""SCS and SIE in another latent space than the store's: a StyleGAN2 store sampled in truncated
w+ (random weights at 32 px, a small random face parser) edited in the authors' mixwp."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lineargan.models.face_parser as fp
from lineargan.analyses.fewshot import FewShotParams
from lineargan.analyses.scs import SCSParams, pair_counts
from lineargan.analyses.sie import SIEParams
from lineargan.cache import render_images
from lineargan.config import DatasetConfig
from lineargan.errors import LinearGanError
from storage.feature_store import FeatureStore
from storage.store_models import store_generator, store_segmenter
from storage.tables import read_table_part
from storage.target import Target
from tasks.analyses.contract import AnalysisContext
from tasks.analysis_steps import run_and_finish
from tasks.cache import build_store
from tests.test_stylegan2_genforce import random_state

FEWSHOT = FewShotParams(shots=(1,), iterations=(5,), repeats=1, methods=("converged",))


@pytest.fixture(scope="module")
def style_ctx(tmp_path_factory) -> AnalysisContext:
    root = tmp_path_factory.mktemp("edit-space")
    torch.save(random_state("genforce"), root / "g.pth")
    torch.manual_seed(0)
    torch.save(fp.FaceParsingUNet(n_classes=15, base_width=4).state_dict(), root / "p.pth")

    def store(split: str, seed: int) -> str:
        cfg = DatasetConfig(
            generator="stylegan2-genforce",
            generator_checkpoint=str(root / "g.pth"),
            segmenter="face-parser-unet",
            segmenter_checkpoint=str(root / "p.pth"),
            segmenter_options={"input_size": 32},
            split=split,
            seed=seed,
            n=32,
            chunk_size=16,
        )
        return build_store(cfg, str(root / "data"), device="cpu")

    return AnalysisContext(
        train_url=store("train", 0),
        eval_url=store("eval", 1),
        results_root=str(root / "results"),
        profile="smoke",
        run_id="edit-space",
        device="cpu",
    )


def test_the_default_edit_space_leaves_result_keys_alone():
    assert "edit_space" not in SCSParams().model_dump(mode="json")
    assert SIEParams(edit_space="mixwp").model_dump(mode="json")["edit_space"] == "mixwp"
    assert SCSParams(edit_space="mixwp").config_hash() != SCSParams().config_hash()


def test_scs_samples_in_mixwp_from_a_truncated_store(style_ctx):
    params = SCSParams(
        targets=2, samples=1, steps=2, shots=(1,), repeats=1, fewshot=FEWSHOT,
        baseline="none", edit_space="mixwp", batch=4,
    )  # fmt: skip
    result = run_and_finish("scs", style_ctx, params)
    rows = read_table_part(style_ctx.results_root, "scs_samples", result.key)
    store = FeatureStore.open(Target(style_ctx.train_url))
    mixwp = store_generator(store, "cpu", latent_space="mixwp")
    truncated = store_generator(store, "cpu")
    assert (mixwp.latent_space, truncated.latent_space) == ("mixwp", "trunc-wp")
    # the recorded scores are those of the recorded latents read as mixwp, not as trunc-wp
    evals = FeatureStore.open(Target(style_ctx.eval_url))
    targets = evals.read_selection(rows["target_index"].to_numpy(), images=False).labels
    latents = torch.tensor(np.stack(rows["latent"].to_numpy()))
    reference = store_segmenter(store)
    n_class = len(store.spec.class_names)

    def inter(generator) -> np.ndarray:
        labels = reference.segment(render_images(generator, latents, 4)).labels
        return pair_counts(targets, labels, n_class)[0]

    assert np.array_equal(inter(mixwp), np.stack(rows["inter"].to_numpy()))
    assert not np.array_equal(
        render_images(mixwp, latents, 4), render_images(truncated, latents, 4)
    )
    default = run_and_finish("scs", style_ctx, params.model_copy(update={"edit_space": None}))
    assert default.key != result.key


def test_sie_edits_images_drawn_in_mixwp(style_ctx):
    params = SIEParams(
        images=2, steps=2, n_shot=1, fewshot=FEWSHOT, baseline="none",
        edit_space="mixwp", batch=4,
    )  # fmt: skip
    result = run_and_finish("sie", style_ctx, params)
    edits = read_table_part(style_ctx.results_root, "sie_edits", result.key)
    assert len(edits) > 0 and set(edits["method"]) == {"SIE", "colour"}
    assert edits["image_index"].between(0, 4 * params.images - 1).all()  # indices in the draw
    assert np.isfinite(edits["loss_final"]).all()


def test_a_generator_without_latent_spaces_cannot_edit_in_another(ctx):
    params = SCSParams(
        targets=1, samples=1, steps=1, shots=(1,), repeats=1, fewshot=FEWSHOT,
        baseline="none", edit_space="mixwp",
    )  # fmt: skip
    with pytest.raises(LinearGanError, match="cannot take latents of another space"):
        run_and_finish("scs", ctx, params)

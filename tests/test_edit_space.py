"""SCS and SIE in another latent space than the store's: a StyleGAN2 store sampled in truncated
w+ (random weights at 32 px, a small random face parser) edited in the authors' mixwp, and
the authors' SCS in z (one z, mapped untruncated to every layer), which on the DCGAN, whose
only space is z, is the store's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineargan.analyses.fewshot import FewShotParams
from lineargan.analyses.scs import SCSParams, pair_counts, pair_seed
from lineargan.analyses.sie import SIEParams
from lineargan.cache import render_images
from lineargan.config import RunConfig
from lineargan.errors import LinearGanError
from lineargan.models.registry import get_generator
from lineargan.store_policy import StorePolicy, with_policy
from storage.feature_store import FeatureStore
from storage.tables import read_table_part
from storage.target import Target
from tasks.analyses.registry import resolve_analyses
from tasks.analyses.runner import run_and_finish
from tasks.run_context import RunContext
from tasks.store_models import store_generator, store_segmenter
from tests.conftest import stylegan2_face_store
from tests.test_stylegan2_genforce import Z_DIM, random_state, to_authors_layout

FEWSHOT = FewShotParams(shots=(1,), iterations=(5,), repeats=1, methods=("converged",))


@pytest.fixture(scope="module")
def style_ctx(tmp_path_factory) -> RunContext:
    root = tmp_path_factory.mktemp("edit-space")

    def store(split: str, seed: int) -> str:
        return stylegan2_face_store(root, split, seed, n=32, chunk_size=16)

    return RunContext(
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
        targets=2, samples=1, steps=0, shots=(1,), repeats=1, fewshot=FEWSHOT,
        baseline="none", edit_space="mixwp", batch=4,
    )  # fmt: skip
    result = run_and_finish("scs", style_ctx, params)
    rows = read_table_part(style_ctx.results_root, "scs_samples", result.key)
    assert set(rows["edit_space"]) == {"mixwp"}
    store = FeatureStore.open(Target(style_ctx.train_url))
    mixwp = store_generator(store, "cpu", latent_space="mixwp")
    truncated = store_generator(store, "cpu")
    assert (mixwp.latent_space, truncated.latent_space) == ("mixwp", "trunc-wp")
    # with no Adam step each sample is its chosen candidate, drawn in mixwp (not trunc-wp)
    latents = torch.tensor(np.stack(rows["latent"].to_numpy()))
    for row, latent in zip(rows.itertuples(), latents, strict=True):
        seed = pair_seed(params.seed, row.target, row.sample)
        drawn = mixwp.sample_latents(params.candidates(), seed)[row.candidate]
        assert torch.equal(latent, drawn)
        assert not torch.equal(latent, truncated.sample_latents(params.candidates(), seed)[0])
    # the recorded scores are those of the recorded latents read as mixwp
    evals = FeatureStore.open(Target(style_ctx.eval_url))
    targets = evals.read_selection(rows["target_index"].to_numpy(), images=False).labels
    reference = store_segmenter(store)
    labels = reference.segment(render_images(mixwp, latents, 4)).labels
    inter = pair_counts(targets, labels, len(store.spec.class_names))[0]
    assert np.array_equal(inter, np.stack(rows["inter"].to_numpy()))
    default = run_and_finish("scs", style_ctx, params.model_copy(update={"edit_space": None}))
    assert default.key != result.key
    default_rows = read_table_part(style_ctx.results_root, "scs_samples", default.key)
    assert set(default_rows["edit_space"]) == {"trunc-wp"}


def test_authors_scs_samples_one_z_per_image(style_ctx):
    """protocol=authors: candidates and optimisation in z (manipulation/scs.py's default
    --latent-strategy z), whatever the store's space; the prior is ‖z‖² (one vector)."""
    params = SCSParams(
        protocol="authors", targets=2, samples=1, steps=0, shots=(1,), repeats=1,
        fewshot=FEWSHOT, baseline="none", batch=16,
    )  # fmt: skip
    assert params.candidates() == 100  # a face store: the FFHQ launcher's 100
    result = run_and_finish("scs", style_ctx, params)
    rows = read_table_part(style_ctx.results_root, "scs_samples", result.key)
    assert set(rows["edit_space"]) == {"z"} and set(rows["n_init"]) == {100}
    assert set(read_table_part(style_ctx.results_root, "scs_summary", result.key)["headline"]) == {
        "authors"
    }
    store = FeatureStore.open(Target(style_ctx.train_url))
    z_space = store_generator(store, "cpu", latent_space="z")
    truncated = store_generator(store, "cpu")
    assert z_space.latent_dim == Z_DIM and truncated.latent_dim == Z_DIM * truncated.latent_vectors
    latents = torch.tensor(np.stack(rows["latent"].to_numpy()))
    for row, latent in zip(rows.itertuples(), latents, strict=True):
        drawn = z_space.sample_latents(100, pair_seed(params.seed, row.target, row.sample))
        assert torch.equal(latent, drawn[row.candidate])
    # a z image is the untruncated w of that z on every layer: the mixwp latent repeating it
    mixwp = store_generator(store, "cpu", latent_space="mixwp")
    with torch.no_grad():
        same = mixwp(latents.repeat(1, mixwp.latent_vectors)).image
        torch.testing.assert_close(z_space(latents).image, same)
    # L_z divided by the latent vectors: 1 in z, one per synthesis layer in mixwp and w+
    assert (z_space.latent_vectors, mixwp.latent_vectors) == (1, truncated.latent_vectors)
    assert mixwp.latent_vectors > 1
    assert params.schedule(z_space.latent_vectors).prior_weight == pytest.approx(1e-3)
    assert params.schedule(mixwp.latent_vectors).prior_weight == pytest.approx(
        1e-3 / mixwp.latent_vectors
    )


@pytest.mark.parametrize("space, vectors", [("z", 1), ("w", 1), ("mixwp", 8), ("trunc-wp", 8)])
def test_the_recipe_adapter_counts_its_latent_vectors(tmp_path, space, vectors):
    """The StyleGAN2 recipes' adapter (the authors' layout): 8 w+ entries at 32 px (one per
    conv, 7, and the last ToRGB's)."""
    torch.save(to_authors_layout(random_state("genforce")), tmp_path / "g.pth")
    g = get_generator("stylegan2-lineargan", checkpoint=str(tmp_path / "g.pth"), latent_space=space)
    assert (g.latent_vectors, g.latent_dim) == (vectors, vectors * Z_DIM)
    policy = with_policy(g, StorePolicy(features="regenerate", max_resolution=16))
    assert policy is not g and policy.latent_vectors == vectors  # a store's view keeps it


def test_authors_scs_on_the_dcgan_samples_in_its_only_space(ctx):
    params = SCSParams(
        protocol="authors", targets=1, samples=1, steps=1, n_init=2, shots=(1,), repeats=1,
        fewshot=FEWSHOT, baseline="none",
    )  # fmt: skip
    assert params.space() == "z"
    rows = read_table_part(ctx.results_root, "scs_samples", run_and_finish("scs", ctx, params).key)
    assert set(rows["edit_space"]) == {"z"} and all(len(z) == 100 for z in rows["latent"])
    # a run under the authors' protocol is not refused for its space (the DCGAN has only z)
    assert resolve_analyses(RunConfig(protocol="authors", analyses=["scs"]))["scs"].space() == "z"


def test_sie_edits_images_drawn_in_mixwp(style_ctx):
    params = SIEParams(
        images=2, steps=0, n_shot=1, fewshot=FEWSHOT, baseline="none",
        edit_space="mixwp", batch=4, lse=None,
    )  # fmt: skip
    result = run_and_finish("sie", style_ctx, params)
    edits = read_table_part(style_ctx.results_root, "sie_edits", result.key)
    assert len(edits) > 0 and set(edits["method"]) == {"SIE", "colour"}
    assert set(edits["edit_space"]) == {"mixwp"}
    # the edited images are drawn in mixwp: with no step, each latent is its image's draw ...
    mixwp = store_generator(FeatureStore.open(Target(style_ctx.train_url)), "cpu", "mixwp")
    drawn = mixwp.sample_latents(4 * params.images, params.seed + 1)
    for row in edits.itertuples():
        assert torch.equal(torch.tensor(row.latent), drawn[row.image_index])
    # ... and rendering it through the edit generator gives back the original image (NaN: an
    # edit whose region is the whole image has no outside)
    changes = edits[["change_inside", "change_outside"]]
    assert changes.notna().any().all() and changes.fillna(0).eq(0).all().all()


def test_a_generator_without_latent_spaces_cannot_edit_in_another(ctx):
    params = SCSParams(
        targets=1, samples=1, steps=1, shots=(1,), repeats=1, fewshot=FEWSHOT,
        baseline="none", edit_space="mixwp",
    )  # fmt: skip
    with pytest.raises(LinearGanError, match="cannot take latents of another space"):
        run_and_finish("scs", ctx, params)
    # a run is refused before any work: the DCGAN default has only z
    run = RunConfig(analyses=["sie"], analysis_params={"sie": {"edit_space": "mixwp"}})
    with pytest.raises(LinearGanError, match="'dcgan-digiface' cannot take latents"):
        resolve_analyses(run)
    stylegan = run.model_copy(update={"generator": "stylegan2-genforce"})
    assert resolve_analyses(stylegan)["sie"].edit_space == "mixwp"

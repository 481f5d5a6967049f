"""Reading user checkpoints: weights only, allow-listed harmless objects, clear refusals."""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch

from lineargan.config import DatasetConfig
from lineargan.errors import CheckpointError, LinearGanError
from lineargan.models.checkpoints import (
    GENFORCE_KEYS,
    read_checkpoint,
    read_generator_checkpoint,
    select_state_dict,
    sha256_file,
)
from lineargan.models.style_latents import StyleLatents


class _Payload:
    """A class that is not weights: unpickling it would run code it names."""


def test_training_checkpoint_with_namespace_loads(tmp_path):
    state = {"conv.weight": torch.ones(2, 2)}
    path = tmp_path / "train.pt"
    torch.save({"g_ema": state, "g": state, "args": argparse.Namespace(size=256)}, path)
    obj = read_checkpoint(path)
    assert obj["args"].size == 256
    got, key = select_state_dict(obj, ("g_ema", "g"), path)
    assert key == "g_ema" and torch.equal(got["conv.weight"], state["conv.weight"])


def test_pickled_object_is_refused_naming_it(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"g_ema": {"w": torch.zeros(1)}, "extra": _Payload()}, path)
    with pytest.raises(CheckpointError, match="not weights.*_Payload"):
        read_checkpoint(path)


def test_nvidia_pickle_is_refused_with_conversion_hint(tmp_path):
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(pickle.dumps({"G_ema": "dnnlib.tflib.Network"}))
    with pytest.raises(CheckpointError, match="convert_weight.py"):
        read_checkpoint(path)
    renamed = tmp_path / "snapshot.pt"  # the same bytes under a torch-like name
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="NVIDIA network pickle"):
        read_checkpoint(renamed)


def test_a_plain_pickle_is_not_called_an_nvidia_network_pickle(tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"conv.weight": [1.0, 2.0]}))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert "is a plain pickle" in err.value.problem and "is an NVIDIA" not in err.value.problem
    assert "torch.save" in err.value.fix and "convert_weight" not in err.value.fix


def test_a_torch_file_named_pkl_loads(tmp_path):
    """The bytes decide, not the name: torch.save's archive is read whatever it is called."""
    path = tmp_path / "weights.pkl"
    torch.save({"conv.weight": torch.ones(2)}, path)
    assert torch.equal(read_checkpoint(path)["conv.weight"], torch.ones(2))
    legacy = tmp_path / "old.pth"
    torch.save({"w": torch.ones(1)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(legacy)["w"], torch.ones(1))


def test_missing_entry_names_what_the_file_holds(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"discriminator": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"generator_smooth.*discriminator"):
        select_state_dict(read_checkpoint(path), ("generator_smooth", "generator"), path)


def test_unknown_generator_option_is_one_line_error():
    with pytest.raises(LinearGanError, match="does not take options \\['latent_space'\\]"):
        DatasetConfig(generator_options={"latent_space": "wp"})


def test_options_give_the_store_its_own_directory():
    plain = DatasetConfig()
    assert plain.store_variant == ""
    other = DatasetConfig(segmenter_options={"upsample": 2})
    assert len(other.store_variant) == 8


@pytest.mark.parametrize(
    "space, dim", [("z", 4), ("w", 3), ("wp", 15), ("trunc-wp", 15), ("mixwp", 20)]
)
def test_style_latents_round_trip(space, dim):
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    style = StyleLatents(space, z_dim=4, w_dim=3, num_layers=5, truncation=0.5, truncation_layers=2)
    w_avg = torch.zeros(3)
    with torch.no_grad():
        latents = style.sample(torch.randn(2, 4), lin, w_avg)
        wp = style.to_wp(latents, lin)
    assert latents.shape == (2, dim) and wp.shape == (2, 5, 3)
    if space == "trunc-wp":  # first layers pulled halfway to the average, the rest untouched
        assert torch.allclose(wp[:, 0], 0.5 * wp[:, 4])
    else:
        assert torch.allclose(wp[:, 0], wp[:, 4])


def test_mixwp_draws_the_untruncated_wp_images_and_maps_each_layer_alone():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    z = torch.randn(2, 4)
    kw = dict(z_dim=4, w_dim=3, num_layers=5)
    mix, wp = StyleLatents("mixwp", **kw), StyleLatents("wp", **kw)
    with torch.no_grad():
        a = mix.to_wp(mix.sample(z, lin, torch.zeros(3)), lin)
        b = wp.to_wp(wp.sample(z, lin, torch.zeros(3)), lin)
        torch.testing.assert_close(a, b)
        zs = torch.randn(2, 20)  # independent z per layer: layer i reads mapping(z_i)
        got = mix.to_wp(zs, lin)
        torch.testing.assert_close(got[:, 3], lin(zs.reshape(2, 5, 4)[:, 3]))


def test_bytes_that_are_no_checkpoint_say_so(tmp_path):
    path = tmp_path / "bogus.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read as a torch file"):
        read_checkpoint(path)


def _tiny_state(value: float) -> dict[str, torch.Tensor]:
    """A one-tensor state dict whose value tells which entry of a checkpoint it came from."""
    return {"conv.weight": torch.full((2, 2), value)}


def _read_genforce(path, checkpoint_key=None):
    return read_generator_checkpoint(
        path,
        generator="pggan-genforce",
        what="the .pt/.pth weights file",
        keys=GENFORCE_KEYS,
        checkpoint_key=checkpoint_key,
    )


def _value(state: dict[str, torch.Tensor]) -> float:
    return float(state["conv.weight"][0, 0])


def test_generator_checkpoint_follows_the_family_key_preference(tmp_path):
    path = tmp_path / "zoo.pth"
    torch.save({"generator": _tiny_state(1.0), "generator_smooth": _tiny_state(2.0)}, path)
    ckpt = _read_genforce(path)
    assert _value(ckpt.state) == 2.0  # generator_smooth (EMA) before generator
    assert ckpt.path == path and ckpt.source == str(path)
    assert ckpt.weights_id == sha256_file(path)  # no key chosen: the plain file hash
    bare_first = read_generator_checkpoint(
        path, generator="g", what="a file", keys=(None, "generator", "generator_smooth")
    )
    assert _value(bare_first.state) == 1.0  # another family's order is kept as given


def test_generator_checkpoint_user_key_wins_and_suffixes_the_weights_id(tmp_path):
    path = tmp_path / "zoo.pth"
    torch.save({"generator": _tiny_state(1.0), "generator_smooth": _tiny_state(2.0)}, path)
    chosen = _read_genforce(path, checkpoint_key="generator")
    assert _value(chosen.state) == 1.0
    assert chosen.weights_id == f"{sha256_file(path)}:generator"
    # naming the default entry explicitly is still a user's pick, so still suffixed
    assert _read_genforce(path, "generator_smooth").weights_id.endswith(":generator_smooth")


def test_generator_checkpoint_unnests_a_genforce_runner_checkpoint(tmp_path):
    path = tmp_path / "checkpoint_iter010000.pth"
    runner = {"generator": _tiny_state(1.0), "generator_smooth": _tiny_state(2.0)}
    torch.save({"models": runner, "running_metadata": {"iter": torch.tensor(10)}}, path)
    assert _value(_read_genforce(path).state) == 2.0
    assert _value(_read_genforce(path, "generator").state) == 1.0
    ckpt = _read_genforce(path)
    assert set(ckpt.contents) == {"models", "running_metadata"}  # the file as saved


def test_generator_checkpoint_keeps_a_state_dict_with_a_models_tensor(tmp_path):
    path = tmp_path / "bare.pth"
    state = _tiny_state(3.0) | {"models": torch.zeros(1)}  # a tensor, not a runner's mapping
    torch.save(state, path)
    assert set(_read_genforce(path).state) == {"conv.weight", "models"}


def test_generator_checkpoint_without_a_path_names_the_option_and_file(tmp_path):
    with pytest.raises(CheckpointError, match="'pggan-genforce' has no embedded weights") as err:
        _read_genforce(None)
    assert "generator_checkpoint" in str(err.value) and ".pt/.pth weights file" in str(err.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        _read_genforce(tmp_path / "absent.pth")


def test_generator_checkpoint_missing_entry_names_the_key(tmp_path):
    path = tmp_path / "zoo.pth"
    torch.save({"generator": _tiny_state(1.0), "discriminator": _tiny_state(0.0)}, path)
    with pytest.raises(CheckpointError, match=r"\['generator_ema'\].*discriminator"):
        _read_genforce(path, checkpoint_key="generator_ema")
    empty = tmp_path / "disc_only.pth"
    torch.save({"discriminator": _tiny_state(0.0)}, empty)
    with pytest.raises(CheckpointError, match=r"\['generator_smooth', 'generator'\]"):
        _read_genforce(empty)

"""SeFa (lineargan/sefa.py): directions of every family against SeFa's own recipe written here
from the raw weights (``utils.factorize_weight``: (d, out) matrix, unit columns, eigenvectors of
W Wᵀ), solved by SVD instead of an eigensolver; and edits that change the image while α = 0
reproduces it bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lineargan.models.hooked  # noqa: F401 - registers torch-hooks
import lineargan.models.pggan_genforce  # noqa: F401 - registers pggan-genforce
import lineargan.models.stylegan2_genforce  # noqa: F401 - registers stylegan2-genforce
import lineargan.models.stylegan2_lineargan  # noqa: F401 - registers stylegan2-lineargan
import lineargan.models.stylegan2_rosinality  # noqa: F401 - registers stylegan2-rosinality
import lineargan.models.stylegan_genforce  # noqa: F401 - registers stylegan-genforce
from lineargan.errors import LinearGanError
from lineargan.models.registry import get_generator
from lineargan.sefa import check_editable, edit, resolve_layers, sefa, shared_shift_gradient
from lineargan.store_policy import StorePolicy, with_policy
from tests.test_hooked_generator import DCGAN
from tests.test_pggan_stylegan import pggan_genforce_state, stylegan_genforce_state
from tests.test_stylegan2_genforce import random_state, to_authors_layout
from tests.test_stylegan2_rosinality import random_generator


def reference(weights_t: list[torch.Tensor], normalize: bool = True):
    """SeFa's recipe on (d, out_i) matrices: concatenate the columns, unit columns, then the
    top eigenpairs of W Wᵀ — here from the SVD of W (left singular vectors, σ²)."""
    w = torch.cat([t.double() for t in weights_t], dim=1)
    if normalize:
        w = w / w.norm(dim=0, keepdim=True)
    u, s, _ = torch.linalg.svd(w, full_matrices=False)
    return (s**2).numpy(), u.T.numpy()


def assert_same_directions(fact, values, directions, k: int = 4) -> None:
    """Eigenvalues equal; the top ``k`` directions equal up to sign (distinct eigenvalues)."""
    d = fact.directions.shape[1]
    np.testing.assert_allclose(fact.eigenvalues[: len(values)], values[:d], rtol=1e-6, atol=1e-9)
    cos = np.abs(np.sum(fact.directions[:k] * directions[:k], axis=1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)
    np.testing.assert_allclose(fact.directions @ fact.directions.T, np.eye(d), atol=1e-8)


def test_pggan_first_layer_directions(tmp_path):
    sd = pggan_genforce_state(0)
    path = tmp_path / "pggan.pth"
    torch.save({"generator_smooth": sd}, path)
    g = get_generator("pggan-genforce", checkpoint=str(path))
    fact = sefa(g)
    # SeFa's code: layer0.weight.flip(2, 3).permute(1, 0, 2, 3).flatten(1) → (z, out·4·4)
    raw = sd["layer0.weight"]
    values, directions = reference([raw.flip(2, 3).permute(1, 0, 2, 3).flatten(1)])
    assert fact.layers == () and fact.dim == g.latent_dim
    assert_same_directions(fact, values, directions)
    # without normalisation: the run-time kernel (gain √2 / √(fan-in)) is A
    scale = np.sqrt(2.0) / np.sqrt(raw.shape[1] * 16)
    raw_values, raw_dirs = reference([raw.permute(1, 0, 2, 3).flatten(1) * scale], False)
    assert_same_directions(sefa(g, normalize=False), raw_values, raw_dirs)


def _stylegan2_reference(sd: dict, layers: tuple[int, ...], num_layers: int) -> list:
    """SeFa's choice per w+ entry: ``layer{i}.style``, the last entry ``output{i // 2}``'s."""
    out = []
    for i in layers:
        name = f"output{i // 2}" if i == num_layers - 1 else f"layer{i}"
        out.append(sd[f"synthesis.{name}.style.weight"].T)
    return out


@pytest.mark.parametrize("group", ["all", "coarse", "middle", "fine", [3, 9]])
def test_stylegan2_style_affine_directions_per_layer_group(tmp_path, group):
    sd = random_state("genforce")
    path = tmp_path / "sg2.pth"
    torch.save({"generator_smooth": sd}, path)
    g = get_generator("stylegan2-genforce", checkpoint=str(path))
    num_layers = g.synthesis.num_layers  # 8 at 32 px
    expected = {"all": range(8), "coarse": (0, 1), "middle": (2, 3, 4, 5), "fine": (6, 7)}
    if isinstance(group, str):
        chosen = tuple(expected[group])
    else:
        with pytest.raises(LinearGanError, match=r"\[9\]"):
            sefa(g, layers=group)
        chosen = (3,)
    fact = sefa(g, layers=group if isinstance(group, str) else chosen)
    assert fact.layers == chosen and fact.num_layers == num_layers
    values, directions = reference(_stylegan2_reference(sd, chosen, num_layers))
    assert_same_directions(fact, values, directions, k=min(4, fact.dim))
    # the authors' port stores the same weights elsewhere: same directions
    port_path = tmp_path / "port.pth"
    torch.save(to_authors_layout(sd), port_path)
    port = sefa(get_generator("stylegan2-lineargan", checkpoint=str(port_path)), layers=chosen)
    np.testing.assert_allclose(port.directions, fact.directions, atol=1e-10)


def test_stylegan_and_rosinality_style_affines(tmp_path):
    sd = stylegan_genforce_state(0)
    path = tmp_path / "sg.pth"
    torch.save({"generator_smooth": sd}, path)
    g = get_generator("stylegan-genforce", checkpoint=str(path))
    fact = sefa(g, layers="middle")
    values, directions = reference([sd[f"synthesis.layer{i}.style.weight"].T for i in (2, 3, 4, 5)])
    assert_same_directions(fact, values, directions)

    ros = random_generator(0)
    ros_path = tmp_path / "ros.pt"
    torch.save({"g_ema": ros.state_dict()}, ros_path)
    g = get_generator("stylegan2-rosinality", checkpoint=str(ros_path))
    state = ros.state_dict()
    n = ros.n_latent  # 8 at 32 px: conv1, convs.0..5, to_rgbs.2
    names = ["conv1", *(f"convs.{i}" for i in range(n - 2)), f"to_rgbs.{len(ros.to_rgbs) - 1}"]
    fact = sefa(g)
    values, directions = reference([state[f"{m}.conv.modulation.weight"].T for m in names])
    assert fact.layers == tuple(range(n))
    assert_same_directions(fact, values, directions)


def test_hooked_module_whose_input_is_the_latent():
    g = get_generator("torch-hooks", random_init=True, seed=3, **DCGAN)
    fact = sefa(g, module="mapping")
    values, directions = reference([g.net.mapping.weight.detach().T])
    assert_same_directions(fact, values, directions)
    with pytest.raises(LinearGanError, match="mappin"):
        sefa(g, module="mappin")
    with pytest.raises(LinearGanError, match="reads 16 inputs"):
        sefa(g, module="blocks.1.conv")  # a later layer: its input is not the latent
    with pytest.raises(LinearGanError, match="needs the module"):
        sefa(g)


def test_solver_order_is_a_permutation_of_the_paper_order(generator):
    paper, code = sefa(generator), sefa(generator, order="solver")
    np.testing.assert_allclose(np.sort(code.eigenvalues), np.sort(paper.eigenvalues), rtol=1e-8)
    assert np.all(np.diff(paper.eigenvalues) <= 0)


@torch.no_grad()
def test_dcgan_edits_change_the_image_and_alpha_zero_reproduces_it(generator):
    fact = sefa(generator)
    # DCGAN's z → 4×4 map, 8192 unit rows of 100 inputs: its eigenvalues sum to the row count
    assert fact.dim == 100 and fact.eigenvalues.sum() == pytest.approx(512 * 16)
    check_editable(generator, fact)
    z = generator.sample_latents(3, seed=0)
    image = generator(z).image
    assert torch.equal(generator(edit(z, fact, 0, 0.0)).image, image)
    moved = generator(edit(z, fact, 0, 3.0)).image
    assert (moved - image).abs().mean() > 0.05
    # the top direction changes the first layer's output more than the last one does
    first = generator.main[0]
    gain = [(first(edit(z, fact, k, 1.0)[..., None, None]) - first(z[..., None, None])).norm()
            for k in (0, 99)]  # fmt: skip
    assert gain[0] > 2 * gain[1]


@torch.no_grad()
def test_stylegan2_edits_only_the_chosen_w_plus_entries(tmp_path):
    path = tmp_path / "sg2.pth"
    torch.save({"generator_smooth": random_state("genforce")}, path)
    g = get_generator("stylegan2-genforce", checkpoint=str(path))
    fact = sefa(g, layers="coarse")
    check_editable(g, fact)
    x = g.sample_latents(2, seed=1)
    moved = edit(x, fact, 0, 2.0)
    delta = (moved - x).reshape(2, g.synthesis.num_layers, -1)
    assert torch.allclose(delta[:, :2], 2.0 * torch.as_tensor(fact.directions[0]).float())
    assert torch.all(delta[:, 2:] == 0)
    assert torch.equal(g(edit(x, fact, 0, 0.0)).image, g(x).image)
    assert (g(moved).image - g(x).image).abs().mean() > 1e-3
    # a store policy's view factorises the same weights
    view = with_policy(g, StorePolicy(layers=[g.layer_names[0]]))
    np.testing.assert_array_equal(sefa(view, layers="coarse").directions, fact.directions)
    # the gradient w.r.t. the shared shift is the sum over the edited entries
    grad = torch.arange(x.numel(), dtype=torch.float32).reshape(x.shape)
    per = grad.reshape(2, g.synthesis.num_layers, -1)
    assert torch.equal(shared_shift_gradient(grad, fact), per[:, 0] + per[:, 1])
    z_space = get_generator("stylegan2-genforce", checkpoint=str(path), latent_space="z")
    with pytest.raises(LinearGanError, match="latent_space wp or trunc-wp"):
        check_editable(z_space, sefa(z_space))


def test_layer_groups_and_unknown_generators(generator):
    assert resolve_layers("fine", 18) == tuple(range(6, 14))  # SeFa's "6-13"
    assert resolve_layers("fine", 10) == (6, 7, 8, 9)
    with pytest.raises(LinearGanError, match="unknown SeFa layer group"):
        resolve_layers("top", 18)
    with pytest.raises(LinearGanError, match="select none"):
        resolve_layers("fine", 4)

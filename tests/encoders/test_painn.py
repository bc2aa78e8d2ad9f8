"""PaiNN encoder: the conformance kit, equivariance of its vector features,
double backward (force training), smoothness at symmetric sites, registry and save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation

from crystalgnn_plugins.encoders import PaiNNEncoder, build_encoder
from crystalgnn_plugins.graph import CrystalGraph
from crystalgnn_plugins.models import EnergyModel, load_model, save_model
from crystalgnn_plugins.plugins import get_registry
from crystalgnn_plugins.testing import EncoderConformance, random_crystal

SMALL = {"atom_features": 8, "num_layers": 2, "num_radial": 8, "cutoff": 4.5, "avg_neighbors": 10.0}


class _StrongVectors(EncoderConformance):
    """At the default init the vector channel changes ``s`` by ~1e-4 only; doubling the
    encoder weights makes it O(1), so the physics checks really exercise it."""

    def make_energy_model(self):
        model = super().make_energy_model()
        with torch.no_grad():
            for p in model.encoder.parameters():
                p.mul_(2.0)
        return model


class TestPaiNN(_StrongVectors):
    encoder = "painn"
    encoder_kwargs = SMALL
    species = ("Sr", "Ti", "O")


class TestPaiNNIonic(_StrongVectors):
    encoder = "painn"
    encoder_kwargs = {**SMALL, "cutoff": 5.0, "element_table": False}
    species = ("Na", "Cl", "O")


# ----------------------------------------------------------------- helpers
def _encoder(**kwargs) -> PaiNNEncoder:
    torch.manual_seed(0)
    enc = PaiNNEncoder(**{**SMALL, **kwargs}).double()
    # non-trivial gates: the default init makes the vector channel small
    with torch.no_grad():
        for p in enc.parameters():
            p.mul_(2.0)
    return enc


def _model(**kwargs) -> EnergyModel:
    torch.manual_seed(0)
    return EnergyModel("painn", {**SMALL, **kwargs}, hidden=8, num_hidden=1).double()


def _perovskite(a: float = 3.9) -> Atoms:
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Atoms("SrTiO3", scaled_positions=frac, cell=np.eye(3) * a, pbc=True)


def _with_isolated_atom() -> Atoms:
    """Two bonded atoms and one atom with no neighbour within the cutoff."""
    return Atoms(
        "NaClO", positions=[[1, 1, 1], [3.5, 1, 1], [9, 9, 9]], cell=np.eye(3) * 14.0, pbc=True
    )


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize("improper", [False, True])
def test_vector_features_are_equivariant(improper):
    enc = _encoder()
    atoms = random_crystal(7, 6, ("Sr", "Ti", "O"))
    g = CrystalGraph.from_atoms(atoms, enc.cutoff, dtype=torch.float64)
    rot = torch.as_tensor(Rotation.random(random_state=3).as_matrix())
    if improper:  # O(3): a rotation times the inversion; vectors are polar
        rot = -rot
    ev = g.edge_vectors()
    s, v = enc.features(g, ev)
    s_rot, v_rot = enc.features(g, ev @ rot.T)
    assert v.shape == (len(atoms), 3, 8)
    assert v.abs().max() > 1e-3  # not trivially zero
    torch.testing.assert_close(s_rot, s, atol=1e-10, rtol=0)
    torch.testing.assert_close(v_rot, torch.einsum("ab,nbf->naf", rot, v), atol=1e-10, rtol=0)
    torch.testing.assert_close(enc(g, ev), s)


def test_padded_and_outer_product_paths_agree(monkeypatch):
    from crystalgnn_plugins.encoders import painn

    model = _model()
    g = model.graphs([_with_isolated_atom(), random_crystal(5, 6, ("Sr", "Ti", "O"))])
    # shuffle the edges: the padded layout must not rely on their order
    perm = torch.randperm(g.num_edges, generator=torch.Generator().manual_seed(0))
    g.edge_index, g.offsets = g.edge_index[:, perm], g.offsets[perm]
    assert painn._Edges(g.edge_index, g.edge_vectors(), g.num_nodes).padded
    padded = model(g, create_graph=True)
    monkeypatch.setattr(painn, "_MAX_PADDING", 0.0)
    assert not painn._Edges(g.edge_index, g.edge_vectors(), g.num_nodes).padded
    plain = model(g, create_graph=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(padded[key], plain[key], atol=1e-12, rtol=1e-10)
    (p1,) = torch.autograd.grad(padded["forces"].pow(2).sum(), [model.encoder.messages[0].filter.weight])
    (p2,) = torch.autograd.grad(plain["forces"].pow(2).sum(), [model.encoder.messages[0].filter.weight])
    torch.testing.assert_close(p1, p2, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("middle", [(), (3,)])
@pytest.mark.parametrize("chunk_floats", [1, 2**22])
def test_gated_message_gradients(middle, chunk_floats, monkeypatch):
    """The chunked gated message sum equals its plain form, with first and second
    derivatives in every input, in one chunk and in one chunk per edge."""
    from crystalgnn_plugins.encoders import painn

    monkeypatch.setattr(painn, "_CHUNK_FLOATS", chunk_floats)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, *middle, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    src = torch.tensor([0, 2, 2, 3, 1, 0])
    dst = torch.tensor([1, 1, 0, 2, 3, 3])
    rbf = torch.randn(6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    per_edge = x[src] * (rbf @ weight.T).view(6, *([1] * len(middle)), 3)
    expected = torch.zeros(4, *middle, 3, dtype=torch.float64).index_add(0, dst, per_edge)

    def fn(x, rbf, weight):
        return painn._GatedMessage.apply(x, rbf, weight, src, dst, 4)

    torch.testing.assert_close(fn(x, rbf, weight), expected)
    assert torch.autograd.gradcheck(fn, (x, rbf, weight))
    assert torch.autograd.gradgradcheck(fn, (x, rbf, weight))
    # only some inputs need gradients (forces with frozen parameters: rbf only), and
    # inputs that are slices of larger tensors (phi columns, rows of the filter weight)
    wide = torch.randn(4, *middle, 7, generator=gen, dtype=torch.float64)
    big_weight = torch.randn(9, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    for needs in [(False, True, False), (True, False, False), (False, False, True), (True, True, False)]:
        xs = wide[..., 2:5].clone().requires_grad_(needs[0])
        rs = rbf.detach().clone().requires_grad_(needs[1])
        ws = big_weight[3:6] if needs[2] else big_weight[3:6].detach()
        out = painn._GatedMessage.apply(xs, rs, ws, src, dst, 4)
        ref = torch.zeros(4, *middle, 3, dtype=torch.float64).index_add(
            0, dst, xs[src] * (rs @ ws.T).view(6, *([1] * len(middle)), 3))
        inputs = [t for t, n in zip((xs, rs, ws), needs, strict=True) if n]
        cot = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        got = torch.autograd.grad(out, inputs, cot)
        want = torch.autograd.grad(ref, inputs, cot)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)


def test_training_and_evaluation_paths_agree():
    """Training mode sums messages with plain autograd, evaluation with the chunked
    op: the same energies, forces and stress (the model has no dropout)."""
    model = _model()
    g = model.graphs([random_crystal(5, 6, ("Sr", "Ti", "O")), random_crystal(3, 7, ("Na", "Cl"))])
    trained = model.train()(g, create_graph=True)
    evaluated = model.eval()(g, create_graph=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(evaluated[key], trained[key], atol=1e-10, rtol=1e-8)
    # and the parameter gradients of a force loss (second derivatives through both paths)
    weights = [model.encoder.messages[k].filter.weight for k in (0, 1)]
    g_train = torch.autograd.grad(trained["forces"].pow(2).sum(), weights)
    g_eval = torch.autograd.grad(evaluated["forces"].pow(2).sum(), weights)
    for a, b in zip(g_eval, g_train, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_vectorized_jacobian_in_evaluation_mode():
    """Batched gradients (vmap over the backward pass) go through the chunked sums too."""
    enc = _encoder(atom_features=4, num_layers=2, num_radial=4, cutoff=3.2)
    g = CrystalGraph.from_atoms(random_crystal(3, 2, ("Na", "Cl")), enc.cutoff, dtype=torch.float64)
    ev = g.edge_vectors().detach()

    def jac(module):
        return torch.autograd.functional.jacobian(lambda e: module(g, e).sum(0), ev, vectorize=True)

    torch.testing.assert_close(jac(enc.eval()), jac(enc.train()))


def test_second_derivatives_match_finite_differences():
    """gradgradcheck in the edge vectors: the Hessian used by force training is right
    (scatter sums, padded layout, smooth vector norm, with v = 0 at an isolated atom)."""
    enc = _encoder(atom_features=4, num_layers=2, num_radial=4, cutoff=3.2)
    atoms = _with_isolated_atom()
    atoms.positions[2] = [1.5, 3.0, 1.0]  # bonded to both, so three atoms have edges
    atoms += Atoms("Si", positions=[[10, 10, 10]])  # and one isolated atom
    g = CrystalGraph.from_atoms(atoms, enc.cutoff, dtype=torch.float64)
    assert 0 < g.num_edges <= 12
    ev = g.edge_vectors().clone().requires_grad_(True)
    w = torch.randn(g.num_nodes, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradgradcheck(lambda x: (enc(g, x) * w).sum(), (ev,))


def test_double_backward_no_nan_with_isolated_and_edgeless_crystals():
    model = _model().train()
    crystals = [_with_isolated_atom(), Atoms("Si", cell=np.eye(3) * 12.0, pbc=True), random_crystal(1, 4, ("Na", "Cl", "O"))]
    g = model.graphs(crystals)
    degree = torch.bincount(g.edge_index[0], minlength=g.num_nodes)
    assert int((degree == 0).sum()) == 2  # the isolated atom and the lone Si
    out = model(g, create_graph=True)
    loss = out["energy"].pow(2).sum() + out["forces"].pow(2).sum() + out["stress"].pow(2).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    # force/stress terms reach the message and update blocks (not only the energy path)
    enc = model.encoder
    assert enc.messages[1].filter.weight.grad.abs().sum() > 0
    assert enc.updates[0].uv.weight.grad.abs().sum() > 0
    forces = out["forces"].detach()
    assert torch.all(forces[2] == 0) and torch.all(forces[3] == 0)
    assert torch.isfinite(forces).all()


def test_energy_is_smooth_at_centrosymmetric_sites():
    """Displacing Ti from its inversion centre: the force is linear in the
    displacement (no |x| cusp from the vector norm), F(d)/d constant from 1e-5 to 1e-3 Å."""
    model = _model(atom_features=8, cutoff=5.0)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.mul_(2.0)
    ratios = []
    for delta in (1e-5, 1e-4, 1e-3):
        atoms = _perovskite()
        atoms.positions[1, 0] += delta
        f = model(model.graph(atoms), compute_stress=False)["forces"][1, 0].item()
        ratios.append(f / delta)
    assert abs(ratios[0]) > 1e-6
    assert np.allclose(ratios, ratios[0], rtol=2e-2), ratios


def test_float32_matches_float64_and_buffers_follow_dtype():
    model = _model()
    atoms = random_crystal(2, 5, ("Sr", "Ti", "O"))
    e64 = model(model.graph(atoms))
    model32 = model.float()
    assert model32.encoder.element_features.dtype == torch.float32
    e32 = model32(model32.graph(atoms))
    assert e32["energy"].dtype == torch.float32
    torch.testing.assert_close(e32["energy"].double(), e64["energy"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(e32["forces"].double(), e64["forces"], atol=1e-4, rtol=1e-4)


def test_registered_and_saved_and_loaded(tmp_path):
    assert get_registry("encoders").get("painn") is PaiNNEncoder
    enc = build_encoder("painn")
    assert (enc.cutoff, enc.max_neighbors, enc.out_features, enc.smooth) == (5.0, None, 64, True)
    assert enc.get_config()["num_layers"] == 3 and enc.get_config()["num_radial"] == 20
    model = EnergyModel("painn", SMALL, elements=["Na", "Cl", "O"], hidden=8, num_hidden=1)
    assert model.get_config()["encoder_kwargs"] == {**enc.get_config(), **SMALL, "element_table": True}
    atoms = random_crystal(4, 5, ("Na", "Cl", "O"))
    before = model.eval()(model.graph(atoms))
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded.encoder, PaiNNEncoder)
    after = loaded(loaded.graph(atoms))
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(after[key], before[key])


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="num_layers"):
        PaiNNEncoder(num_layers=0)
    with pytest.raises(ValueError, match="norm_eps"):
        PaiNNEncoder(norm_eps=0.0)

"""Symmetries of :class:`PeriodicActionNetwork` (float64, random crystals of several sizes).

Transformation laws (lattice rows ``L``, fractional coordinates ``f``):

- rotation/inversion ``L -> L Rᵀ`` (every lattice vector and every Cartesian
  edge vector ``r = d L`` rotated by ``R``), ``f`` unchanged: species logits and
  fractional velocities invariant; the lattice action is a symmetric matrix in the
  Cartesian frame (``Σ u r̂ r̂ᵀ + Σ c â âᵀ``) and goes to ``R g Rᵀ``;
- translation ``f -> f + c (mod 1)``, periodic images ``f_i -> f_i + n_i``: invariant;
- permutation of atoms: per-atom outputs permuted, lattice action invariant.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from crystalgnn_plugins.generation.network import PeriodicActionNetwork, _image_offsets, dense_edges

K = 4
COND = 3
ATOL = 1e-10
PER_ATOM = ("species_logits", "frac_velocity", "node_features")
PER_CRYSTAL = ("lattice_action", "crystal_features")

CASES = settings(max_examples=15, deadline=None)
SIZES = st.sampled_from([1, 2, 3, 5, 8, 13])
SEEDS = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="module", params=[(0, False), (6, False), (6, True)],
                ids=["one_image", "image_sums", "edge_vectors"])
def net(request) -> PeriodicActionNetwork:
    """The network with one edge per pair, with image-summed pair features reaching
    beyond the nearest image (cutoff 4.5 Å in cells of ~3–5 Å), and with free per-edge
    displacements too."""
    image_rbf, edge_vectors = request.param
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PeriodicActionNetwork(K, hidden=16, num_layers=2, num_freqs=4, cond_dim=COND,
                                      image_rbf=image_rbf, image_cutoff=4.5, edge_vectors=edge_vectors)
        if image_rbf:  # the zero-initialised image heads would make the image terms vacuous
            with torch.no_grad():
                for layer in model.modules():
                    if isinstance(layer, torch.nn.Linear):
                        layer.weight.normal_(0, 0.5)
    return model.double().eval()


def crystal(n: int, seed: int):
    """(species (n, K) soft, frac (n, 3), lattice (1, 3, 3), num_atoms, t, cond), float64."""
    rng = np.random.default_rng(seed)
    lattice = (3.0 + n ** (1 / 3)) * np.eye(3) + rng.normal(0, 0.4, (3, 3))
    species = rng.dirichlet(np.ones(K), n)
    return (
        torch.tensor(species),
        torch.tensor(rng.uniform(0, 1, (n, 3))),
        torch.tensor(lattice).unsqueeze(0),
        torch.tensor([n]),
        torch.tensor([rng.uniform()]),
        torch.tensor(rng.normal(size=(1, COND))),
    )


def run(net, species, frac, lattice, num_atoms, t, cond):
    with torch.no_grad():
        return net(species, frac, lattice, num_atoms, t, cond)


def assert_same(a, b, keys=PER_ATOM + PER_CRYSTAL):
    for k in keys:
        torch.testing.assert_close(a[k], b[k], atol=ATOL, rtol=1e-9, msg=lambda m, k=k: f"{k}: {m}")


def test_output_shapes(net):
    species, frac, lattice, num_atoms, t, cond = crystal(5, 0)
    out = run(net, species, frac, lattice, num_atoms, t, cond)
    assert out["frac_velocity"].shape == (5, 3)
    assert out["lattice_action"].shape == (1, 3, 3)
    assert out["species_logits"].shape == (5, K)
    assert out["node_features"].shape == (5, 16) and out["crystal_features"].shape == (1, 16)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_condition_is_required(net):
    species, frac, lattice, num_atoms, t, _ = crystal(3, 0)
    with pytest.raises(ValueError, match="condition vector of width 3"):
        net(species, frac, lattice, num_atoms, t, None)


@CASES
@given(SIZES, SEEDS, SEEDS)
def test_rotation(net, n, seed, rot_seed):
    species, frac, lattice, num_atoms, t, cond = crystal(n, seed)
    rot = torch.tensor(Rotation.random(random_state=rot_seed).as_matrix())
    if rot_seed % 2:
        rot = -rot  # improper: rotation times inversion (the network is O(3)-equivariant)
    out = run(net, species, frac, lattice, num_atoms, t, cond)
    rotated = run(net, species, frac, lattice @ rot.T, num_atoms, t, cond)
    # invariant: species, fractional velocities, features
    assert_same(out, rotated, keys=("species_logits", "frac_velocity", "node_features", "crystal_features"))
    # the lattice action is a Cartesian symmetric tensor: g -> R g Rᵀ
    g = out["lattice_action"]
    torch.testing.assert_close(rotated["lattice_action"], rot @ g @ rot.T, atol=ATOL, rtol=1e-9)
    # ...so its invariants (eigenvalues) do not change, while the matrix does
    torch.testing.assert_close(torch.linalg.eigvalsh(rotated["lattice_action"]), torch.linalg.eigvalsh(g), atol=ATOL, rtol=1e-9)
    # the displacement as a Cartesian vector Σ_j w_ij r_ij rotates with the crystal
    v_cart = out["frac_velocity"] @ lattice[0]
    v_cart_rot = rotated["frac_velocity"] @ (lattice[0] @ rot.T)
    torch.testing.assert_close(v_cart_rot, v_cart @ rot.T, atol=ATOL, rtol=1e-9)


def test_lattice_action_is_not_rotation_invariant(net):
    """Guard against a vacuous equivariance test: the action does change with the frame."""
    species, frac, lattice, num_atoms, t, cond = crystal(5, 3)
    rot = torch.tensor(Rotation.from_euler("xyz", [0.3, -0.7, 1.1]).as_matrix())
    g = run(net, species, frac, lattice, num_atoms, t, cond)["lattice_action"]
    g_rot = run(net, species, frac, lattice @ rot.T, num_atoms, t, cond)["lattice_action"]
    assert (g_rot - g).abs().max() > 1e-3


@CASES
@given(SIZES, SEEDS)
def test_translation(net, n, seed):
    species, frac, lattice, num_atoms, t, cond = crystal(n, seed)
    shift = torch.tensor(np.random.default_rng(seed + 1).uniform(-2, 2, 3))
    out = run(net, species, frac, lattice, num_atoms, t, cond)
    moved = run(net, species, torch.remainder(frac + shift, 1.0), lattice, num_atoms, t, cond)
    assert_same(out, moved)


@CASES
@given(SIZES, SEEDS)
def test_permutation(net, n, seed):
    species, frac, lattice, num_atoms, t, cond = crystal(n, seed)
    perm = torch.tensor(np.random.default_rng(seed + 2).permutation(n))
    out = run(net, species, frac, lattice, num_atoms, t, cond)
    permuted = run(net, species[perm], frac[perm], lattice, num_atoms, t, cond)
    for k in PER_ATOM:
        torch.testing.assert_close(permuted[k], out[k][perm], atol=ATOL, rtol=1e-9)
    for k in PER_CRYSTAL:
        torch.testing.assert_close(permuted[k], out[k], atol=ATOL, rtol=1e-9)


@CASES
@given(SIZES, SEEDS)
def test_periodic_images(net, n, seed):
    species, frac, lattice, num_atoms, t, cond = crystal(n, seed)
    images = torch.tensor(np.random.default_rng(seed + 3).integers(-3, 4, (n, 3)), dtype=torch.float64)
    out = run(net, species, frac, lattice, num_atoms, t, cond)
    shifted = run(net, species, frac + images, lattice, num_atoms, t, cond)
    assert_same(out, shifted)


@CASES
@given(SIZES, SEEDS)
def test_lattice_action_is_symmetric(net, n, seed):
    species, frac, lattice, num_atoms, t, cond = crystal(n, seed)
    g = run(net, species, frac, lattice, num_atoms, t, cond)["lattice_action"]
    torch.testing.assert_close(g, g.transpose(-1, -2), atol=1e-12, rtol=0)


@CASES
@given(SIZES, SIZES, SEEDS)
def test_batch_composition_does_not_matter(net, n1, n2, seed):
    a = crystal(n1, seed)
    b = crystal(n2, seed + 1)
    alone = run(net, *a)
    batched = [torch.cat([x, y]) for x, y in zip(a, b)]
    out_ab = run(net, *batched)
    out_ba = run(net, *[torch.cat([y, x]) for x, y in zip(a, b)])
    for k in PER_ATOM:
        torch.testing.assert_close(out_ab[k][:n1], alone[k], atol=ATOL, rtol=1e-9)
        torch.testing.assert_close(out_ba[k][n2:], alone[k], atol=ATOL, rtol=1e-9)
    for k in PER_CRYSTAL:
        torch.testing.assert_close(out_ab[k][:1], alone[k], atol=ATOL, rtol=1e-9)
        torch.testing.assert_close(out_ba[k][1:], alone[k], atol=ATOL, rtol=1e-9)


def test_single_atom_has_no_displacement(net):
    out = run(net, *crystal(1, 0))
    assert torch.equal(out["frac_velocity"], torch.zeros(1, 3, dtype=torch.float64))
    assert torch.isfinite(out["lattice_action"]).all()


def test_outputs_depend_on_inputs(net):
    """Sanity: the network is not constant (otherwise the invariance tests say nothing)."""
    species, frac, lattice, num_atoms, t, cond = crystal(6, 5)
    out = run(net, species, frac, lattice, num_atoms, t, cond)
    moved = frac.clone()
    moved[0] += 0.1
    out2 = run(net, species, moved, lattice, num_atoms, t, cond)
    out3 = run(net, species, frac, lattice, num_atoms, t + 0.3, cond)
    for other in (out2, out3):
        for k in ("frac_velocity", "lattice_action", "species_logits"):
            assert (other[k] - out[k]).abs().max() > 1e-6, k
    assert out["frac_velocity"].abs().max() > 1e-6


@pytest.mark.parametrize("counts", [[1], [3], [2, 1, 4], [1, 1]])
def test_dense_edges(counts):
    num_atoms = torch.tensor(counts)
    edge_index, edge_batch = dense_edges(num_atoms)
    n = num_atoms.long()
    assert edge_index.shape == (2, int((n * (n - 1)).sum()))
    i, j = edge_index
    atom_batch = torch.repeat_interleave(torch.arange(len(counts)), num_atoms)
    assert (i != j).all()
    assert torch.equal(atom_batch[i], edge_batch) and torch.equal(atom_batch[j], edge_batch)
    # every ordered pair of the same crystal exactly once
    pairs = {(int(a), int(b)) for a, b in zip(i, j)}
    expected = {(a, b) for a in range(int(n.sum())) for b in range(int(n.sum())) if a != b and atom_batch[a] == atom_batch[b]}
    assert pairs == expected and len(pairs) == len(i)


@CASES
@given(SEEDS)
def test_image_offsets_reach_every_image_within_the_cutoff(seed):
    """Brute force over images -4..4: every image of a wrapped difference closer than the
    cutoff has its offset among those the network sums over."""
    rng = np.random.default_rng(seed)
    lattice = torch.tensor(rng.uniform(2.2, 4.0) * np.eye(3) + rng.normal(0, 0.6, (3, 3))).unsqueeze(0)
    cutoff = 3.0
    offsets = {tuple(int(x) for x in row) for row in _image_offsets(lattice, cutoff, max_range=4)}
    d = torch.tensor(rng.uniform(-0.5, 0.5, (50, 3)))
    grid = torch.cartesian_prod(*[torch.arange(-4, 5, dtype=torch.float64)] * 3)
    dist = torch.linalg.norm((d.unsqueeze(1) + grid) @ lattice[0], dim=-1)  # (50, 729)
    needed = {tuple(int(x) for x in grid[k]) for k in torch.nonzero(dist < cutoff)[:, 1].tolist()}
    assert needed <= offsets

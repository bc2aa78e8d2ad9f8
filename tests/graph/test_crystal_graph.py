import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list
from pymatgen.core import Lattice, Structure

from crystalgnn_plugins.graph import CrystalGraph, GraphError
from crystalgnn_plugins.testing import random_crystal


def test_edges_match_ase_neighbour_list_in_small_triclinic_cell():
    atoms = random_crystal(3, 4, ("Cu", "Au"))
    cutoff = 7.0  # larger than the cell: many periodic images, self-images included
    g = CrystalGraph.from_atoms(atoms, cutoff, dtype=torch.float64)
    i, j, d = ase_neighbor_list("ijd", atoms, cutoff)
    assert g.num_edges == len(i)
    lengths = torch.linalg.norm(g.edge_vectors(), dim=1).numpy()
    np.testing.assert_allclose(np.sort(lengths), np.sort(d), atol=1e-10)
    # self-image edges exist and multigraph edges between the same pair too
    src, dst = g.edge_index.numpy()
    assert (src == dst).any()
    pairs = list(zip(src.tolist(), dst.tolist()))
    assert len(set(pairs)) < len(pairs)


def test_max_neighbors_keeps_nearest():
    atoms = random_crystal(1, 5, ("Sr", "Ti", "O"))
    full = CrystalGraph.from_atoms(atoms, 8.0, dtype=torch.float64)
    capped = CrystalGraph.from_atoms(atoms, 8.0, max_neighbors=12, dtype=torch.float64)
    assert capped.num_edges == 12 * len(atoms)
    d_full = torch.linalg.norm(full.edge_vectors(), dim=1)
    d_cap = torch.linalg.norm(capped.edge_vectors(), dim=1)
    for a in range(len(atoms)):
        nearest = torch.sort(d_full[full.edge_index[0] == a]).values[:12]
        assert torch.allclose(torch.sort(d_cap[capped.edge_index[0] == a]).values, nearest)


def test_structure_and_atoms_give_same_graph():
    s = Structure(Lattice.from_parameters(4.0, 4.2, 4.4, 80, 95, 100), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.45, 0.55]])
    g1 = CrystalGraph.from_structure(s, 5.0, dtype=torch.float64)
    from pymatgen.io.ase import AseAtomsAdaptor

    g2 = CrystalGraph.from_atoms(AseAtomsAdaptor.get_atoms(s), 5.0, dtype=torch.float64)
    assert torch.equal(g1.edge_index, g2.edge_index)
    assert torch.allclose(g1.edge_vectors(), g2.edge_vectors())


def test_non_periodic_and_mixed_pbc():
    mol = molecule("H2O")
    g = CrystalGraph.from_atoms(mol, 3.0)
    assert g.num_edges == 6 and torch.all(g.offsets == 0)
    assert g.volumes()[0] == 0
    slab = bulk("Cu", "fcc", a=3.6, cubic=True)
    slab.pbc = [True, True, False]
    g = CrystalGraph.from_atoms(slab, 4.0)
    assert torch.all(g.offsets[:, 2] == 0)


def test_edge_vectors_differentiable_in_positions_and_cell():
    atoms = bulk("Cu", "fcc", a=3.6)
    g = CrystalGraph.from_atoms(atoms, 5.0, dtype=torch.float64)
    pos = g.positions.clone().requires_grad_(True)
    cell = g.cell.clone().requires_grad_(True)
    g.edge_vectors(pos, cell).norm(dim=1).sum().backward()
    assert cell.grad.abs().sum() > 0


def test_collate_offsets_indices():
    a = bulk("Cu", "fcc", a=3.6)
    b = bulk("NaCl", "rocksalt", a=5.6)
    ga, gb = CrystalGraph.from_atoms(a, 4.0), CrystalGraph.from_atoms(b, 4.0)
    g = CrystalGraph.collate([ga, gb])
    assert g.num_graphs == 2 and g.num_nodes == 3
    assert g.edge_index[:, ga.num_edges :].min() >= 1
    assert torch.allclose(g.edge_vectors()[ga.num_edges :], gb.edge_vectors())
    with pytest.raises(ValueError, match="cutoff"):
        CrystalGraph.collate([ga, CrystalGraph.from_atoms(b, 5.0)])


def test_overlapping_atoms_and_degenerate_cell_raise_named_errors():
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0]], cell=np.eye(3) * 3, pbc=True)
    with pytest.raises(GraphError, match=r"'bad'.*overlap"):
        CrystalGraph.from_atoms(atoms, 4.0, structure_id="bad")
    flat = Atoms("Cu", cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]], pbc=True)
    with pytest.raises(GraphError, match="degenerate"):
        CrystalGraph.from_atoms(flat, 4.0, structure_id="flat")


@pytest.mark.parametrize("cell, pbc, match", [
    ([[2.5, 0, 0], [0, 2.5, 0], [2.5, 2.5, 1e-2]], True, r"degenerate \(its periodic vectors span 0.0625 Å\^3\)"),
    ([[2.5, 0, 0], [2.5, 1e-3, 0], [0, 0, 9]], [True, True, False], r"span 0.0025 Å\^2"),
    ([[np.nan, 0, 0], [0, 5, 0], [0, 0, 5]], True, "non-finite periodic cell"),
    ([[1e6, 0, 0], [0, 5, 0], [0, 0, 5]], True, "1e\\+06 Å long .*pbc=False"),
])
def test_cells_the_neighbour_search_cannot_handle_are_refused(cell, pbc, match):
    """Nearly flat cells (millions of images: a hang or NaN) and huge or non-finite ones
    (the neighbour search crashes the interpreter) raise before it runs."""
    atoms = Atoms("Cu2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * 3, pbc=True)
    atoms.set_cell(np.array(cell), scale_atoms=False)
    atoms.pbc = pbc
    with pytest.raises(GraphError, match=match):
        CrystalGraph.from_atoms(atoms, 4.0, structure_id="cell")
    # a huge non-periodic direction is fine (vacuum)
    ok = Atoms("Cu", cell=[[3, 0, 0], [0, 3, 0], [0, 0, 1e6]], pbc=[True, True, False])
    assert CrystalGraph.from_atoms(ok, 4.0).num_edges > 0


def test_isolated_atom_has_no_edges():
    atoms = Atoms("Cu", cell=np.eye(3) * 20, pbc=True)
    g = CrystalGraph.from_atoms(atoms, 5.0)
    assert g.num_edges == 0


def _edge_set(graph):
    return {
        (int(i), int(j), *map(int, s))
        for (i, j), s in zip(graph.edge_index.T.tolist(), graph.offsets.round().long(), strict=True)
    }


def test_from_batch_equals_collated_from_atoms_and_keeps_gradients():
    frames = [bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1)), bulk("NaCl", "rocksalt", a=5.6), bulk("Si", "diamond", a=5.43)]
    for k, a in enumerate(frames):
        a.rattle(0.05, seed=k)
    ref = CrystalGraph.collate([CrystalGraph.from_atoms(a, 4.0, dtype=torch.float64) for a in frames])
    positions = torch.tensor(np.concatenate([a.positions for a in frames]), requires_grad=True)
    cell = torch.tensor(np.stack([a.cell.array for a in frames]), requires_grad=True)
    numbers = torch.tensor(np.concatenate([a.numbers for a in frames]))
    graph = CrystalGraph.from_batch(numbers, positions, cell, torch.ones(3, 3, dtype=torch.bool), [len(a) for a in frames], 4.0)
    assert _edge_set(graph) == _edge_set(ref)
    assert torch.equal(graph.batch, ref.batch) and graph.num_atoms.tolist() == [2, 2, 2]
    lengths = graph.edge_vectors().norm(dim=-1)
    assert torch.allclose(lengths.sort().values, ref.edge_vectors().norm(dim=-1).sort().values)
    gp, gc = torch.autograd.grad(lengths.sum(), [positions, cell])
    assert gp.abs().sum() > 0 and gc.abs().sum() > 0


def test_from_batch_names_every_structure_with_overlapping_atoms():
    good, bad = bulk("Cu", "fcc", a=3.6), bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    bad.positions[1] = bad.positions[0] + 1e-6
    frames = [good, bad, good.copy(), bad.copy()]
    with pytest.raises(GraphError, match=r"structure 'b': atoms 0 and 1 overlap .*\(and 1 more structures\)") as err:
        CrystalGraph.from_batch(
            torch.tensor(np.concatenate([a.numbers for a in frames])),
            torch.tensor(np.concatenate([a.positions for a in frames])),
            torch.tensor(np.stack([a.cell.array for a in frames])),
            torch.ones(4, 3, dtype=torch.bool), [len(a) for a in frames], 3.0, ids=["a", "b", "c", "d"],
        )
    assert sorted(err.value.failures) == [1, 3]

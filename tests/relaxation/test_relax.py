"""``relax()``: one by one (ASE FIRE + FrechetCellFilter) and batched FIRE."""

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crystalgnn_plugins.calculators import GNNCalculator
from crystalgnn_plugins.relaxation import (
    NotConvergedWarning,
    RelaxationError,
    RelaxResult,
    SkippedStructureWarning,
    relax,
)
from crystalgnn_plugins.relaxation.ase_relax import relax_atoms_ase
from crystalgnn_plugins.relaxation.batched_fire import expm_frechet_adjoint


def _quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvergedWarning)  # these runs must converge
        return relax(*args, **kwargs)


def _emt_lattice_constant() -> float:
    """EMT's fcc Cu lattice constant from an energy-volume scan (independent of any optimizer)."""
    a = np.linspace(3.55, 3.63, 9)
    e = []
    for x in a:
        atoms = bulk("Cu", "fcc", a=x)
        atoms.calc = EMT()
        e.append(atoms.get_potential_energy())
    c = np.polyfit(a, e, 4)
    roots = np.roots(np.polyder(c)).real
    return float(roots[np.argmin(np.abs(roots - 3.59))])


# ----------------------------------------------------------------- physics
def test_batched_relaxes_to_the_emt_minimum(emt_model, cu_cells):
    results = _quiet(cu_cells, emt_model, fmax=0.01, batched=True)
    a_emt = _emt_lattice_constant()
    for r, atoms in zip(results, cu_cells, strict=True):
        assert isinstance(r, RelaxResult) and r.converged and r.error is None
        assert r.residual < 0.01 and r.max_force < 0.011  # Cartesian forces: F-transformed in the criterion
        # relaxed fcc: volume per atom a^3/4, stress ~ 0, energy went down
        a = (4 * r.structure.get_volume() / len(atoms)) ** (1 / 3)
        assert a == pytest.approx(a_emt, abs=3e-3), (r.id, a, a_emt)
        assert np.abs(r.stress).max() < 2e-3  # eV/Å^3 (0.3 GPa)
        assert r.energy < r.initial_energy
        assert r.energy_per_atom == pytest.approx(r.energy / len(atoms))
        # the attached calculator holds the final results, which are EMT's
        assert r.structure.get_potential_energy() == pytest.approx(r.energy)
        np.testing.assert_allclose(r.structure.get_forces(), r.forces)
        check = r.structure.copy()
        check.calc = EMT()
        assert check.get_potential_energy() == pytest.approx(r.energy, abs=1e-9)


def test_ase_driver_is_plain_ase_fire_on_a_frechet_cell_filter(cu_cells):
    atoms, ref = cu_cells[1].copy(), cu_cells[1].copy()
    out = relax_atoms_ase(atoms, EMT(), fmax=0.05, steps=200)
    ref.calc = EMT()
    opt = FIRE(FrechetCellFilter(ref), logfile=None)
    assert opt.run(fmax=0.05, steps=200) == out.converged
    assert opt.nsteps == out.steps
    np.testing.assert_allclose(out.cell, ref.cell.array, atol=1e-12)
    assert out.energy == pytest.approx(ref.get_potential_energy(), abs=1e-12)


def test_frechet_adjoint_matches_finite_differences():
    torch.manual_seed(0)
    L = 0.2 * torch.randn(2, 3, 3, dtype=torch.float64)
    G = torch.randn(2, 3, 3, dtype=torch.float64)
    got = expm_frechet_adjoint(L, G)
    h = 1e-6
    for m in range(3):
        for n in range(3):
            d = torch.zeros(3, 3, dtype=torch.float64)
            d[m, n] = h
            num = ((torch.linalg.matrix_exp(L + d) - torch.linalg.matrix_exp(L - d)) / (2 * h) * G).sum((1, 2))
            torch.testing.assert_close(got[:, m, n], num, atol=1e-7, rtol=1e-7)


# ------------------------------------------------- batched == one by one
def test_batched_follows_the_ase_path_exactly(morse_model, cu_cells):
    """Same algorithm: same number of steps, same final structures (up to round-off)."""
    one = _quiet(cu_cells, morse_model, fmax=0.02, trajectory=True)
    morse_model.calls.clear()
    many = _quiet(cu_cells, morse_model, fmax=0.02, batched=True, batch_size=8, trajectory=True)
    assert max(morse_model.calls) == len(cu_cells)  # all of them in one model call
    for a, b, atoms in zip(one, many, cu_cells, strict=True):
        assert a.steps == b.steps > 5
        assert a.energy == pytest.approx(b.energy, abs=1e-9)
        np.testing.assert_allclose(a.structure.cell.array, b.structure.cell.array, atol=1e-8)
        np.testing.assert_allclose(a.structure.positions, b.structure.positions, atol=1e-8)
        np.testing.assert_allclose(a.stress, b.stress, atol=1e-10)
        np.testing.assert_allclose(a.trajectory, b.trajectory, atol=1e-9)
        assert len(a.trajectory) == a.steps + 1
        assert a.trajectory[0] == pytest.approx(a.initial_energy)
        assert a.trajectory[-1] == pytest.approx(a.energy)
        # the cell really moved (the Morse crystal is larger than the input cells)
        assert a.structure.get_volume() > 1.05 * atoms.get_volume()


def test_pressure_relaxes_to_the_enthalpy_minimum(emt_model, cu_cells):
    """At P the relaxed stress is -P (ASE sign: stress = -pressure), for both paths;
    the batched path follows ASE's FrechetCellFilter(scalar_pressure=P) step by step."""
    from ase.units import GPa

    p = 5.0
    one = _quiet(cu_cells, emt_model, fmax=0.005, pressure=p)
    many = _quiet(cu_cells, emt_model, fmax=0.005, pressure=p, batched=True)
    zero = _quiet(cu_cells, emt_model, fmax=0.005, batched=True)
    for a, b, z in zip(one, many, zero, strict=True):
        assert a.converged and b.converged and a.steps == b.steps
        np.testing.assert_allclose(a.structure.cell.array, b.structure.cell.array, atol=1e-8)
        np.testing.assert_allclose(b.stress[:3], -p * GPa, atol=6e-4)  # eV/Å³ (0.1 GPa; fmax on the cell rows)
        np.testing.assert_allclose(b.stress[3:], 0.0, atol=6e-4)
        assert b.structure.get_volume() < 0.99 * z.structure.get_volume()  # compressed


def test_pressure_needs_the_cell(morse_model, cu_cells):
    with pytest.raises(ValueError, match="relax_cell"):
        relax(cu_cells, morse_model, pressure=1.0, relax_cell=False)
    with pytest.raises(ValueError, match="pressure"):
        relax(cu_cells, morse_model, pressure=float("nan"))


def test_batched_matches_one_by_one_with_a_float32_gnn(gnn_model, cu_cells):
    one = _quiet(cu_cells, gnn_model, fmax=0.02, dtype=torch.float32)
    many = _quiet(cu_cells, gnn_model, fmax=0.02, dtype=torch.float32, batched=True)
    for a, b in zip(one, many, strict=True):
        assert a.converged and b.converged and a.steps > 0
        assert abs(a.steps - b.steps) <= 2
        assert a.energy_per_atom == pytest.approx(b.energy_per_atom, abs=1e-3)
        np.testing.assert_allclose(a.structure.cell.cellpar(), b.structure.cell.cellpar(), atol=2e-3)
    assert next(gnn_model.parameters()).dtype == torch.float64  # the caller's model is not converted


def test_queue_keeps_the_batch_full_and_gives_the_same_results(morse_model, make_cu):
    cells = make_cu(1) + make_cu(2)  # 8 structures
    full = _quiet(cells, morse_model, batched=True, batch_size=8)
    morse_model.calls.clear()
    queued = _quiet(cells, morse_model, batched=True, batch_size=3)
    calls, evaluations = morse_model.calls, sum(r.steps + 1 for r in queued)
    assert max(calls) == 3
    assert sum(calls) == evaluations  # every evaluation in some call, none twice
    # refilled from the queue: the batch is full until the queue is empty
    first_short = next(k for k, c in enumerate(calls) if c < 3)
    assert sum(calls[:first_short]) > evaluations - 3 * max(r.steps + 1 for r in queued)
    for a, b in zip(full, queued, strict=True):
        assert a.id == b.id and a.steps == b.steps
        assert a.energy == pytest.approx(b.energy, abs=1e-9)


def test_positions_only_keeps_the_cell(morse_model, cu_cells):
    results = _quiet(cu_cells, morse_model, relax_cell=False, batched=True)
    ref = _quiet(cu_cells[:2], morse_model, relax_cell=False)
    for r, atoms in zip(results, cu_cells, strict=True):
        np.testing.assert_allclose(r.structure.cell.array, atoms.cell.array, atol=1e-12)
        assert r.max_force < 0.05 and r.residual == pytest.approx(r.max_force)
    for a, b in zip(ref, results, strict=False):
        assert a.steps == b.steps and a.energy == pytest.approx(b.energy, abs=1e-9)


def test_molecule_positions_only(morse_model):
    cluster = Atoms("Cu4", positions=[[0, 0, 0], [2.4, 0, 0], [0, 2.4, 0], [0, 0, 2.6]])
    one, many = (relax(cluster, morse_model, relax_cell=False, batched=b)[0] for b in (False, True))
    assert one.converged and one.steps == many.steps > 0
    assert one.energy == pytest.approx(many.energy, abs=1e-9)
    assert np.isnan(one.stress).all() and np.isnan(many.stress).all()
    with pytest.raises(RelaxationError, match="periodic in 3D"):
        relax(cluster, morse_model)


# --------------------------------------------------------- reporting
@pytest.mark.parametrize("batched", [False, True])
def test_non_convergence_is_reported(morse_model, cu_cells, batched):
    with pytest.warns(NotConvergedWarning, match=r"4 of 4 structures did not converge .* within 2 steps: 'cu0'"):
        results = relax(cu_cells, morse_model, steps=2, batched=batched)
    assert all(not r.converged and r.steps == 2 and r.residual >= 0.05 for r in results)
    assert "converged=False" in repr(results[0])


def test_relaxed_input_takes_zero_steps(morse_model, cu_cells):
    (relaxed,) = _quiet(cu_cells[0], morse_model, fmax=0.01, batched=True)
    for batched in (False, True):
        (r,) = _quiet(relaxed.structure, morse_model, batched=batched)
        assert r.converged and r.steps == 0 and r.energy == pytest.approx(r.initial_energy)
        assert r.energy == pytest.approx(relaxed.energy)


# ---------------------------------------------------------- inputs / outputs
def test_fix_symmetry_with_a_large_cell_change_returns_the_relaxed_cell(morse_model):
    """The relaxed cell is set as it is: FixSymmetry (which acted at every step) would refuse to
    adjust a deformation of more than 25 % at once and lose every result of the call."""
    from ase.constraints import FixSymmetry

    atoms = bulk("Cu", "fcc", a=5.6, cubic=True)  # 28 % above the Morse minimum (a = 4.05 Å)
    atoms.set_constraint(FixSymmetry(atoms))
    reference = atoms.copy()
    reference.calc = GNNCalculator(morse_model)
    FIRE(FrechetCellFilter(reference), logfile=None).run(fmax=0.05, steps=500)
    (res,) = relax([atoms], morse_model, on_error="skip")
    assert res.error is None and res.converged
    assert np.abs(res.structure.cell.lengths() / atoms.cell.lengths() - 1).max() > 0.25
    np.testing.assert_allclose(res.structure.cell.array, reference.cell.array, atol=1e-6)
    assert isinstance(res.structure.constraints[0], FixSymmetry)


def test_inputs_are_not_modified(morse_model, cu_cells):
    atoms = cu_cells[2]
    atoms.calc = EMT()
    structure = AseAtomsAdaptor.get_structure(cu_cells[3])
    before_atoms = (atoms.positions.copy(), atoms.cell.array.copy(), dict(atoms.info), atoms.calc)
    before_structure = structure.as_dict()
    for batched in (False, True):
        results = relax([atoms, structure], morse_model, batched=batched)
        np.testing.assert_array_equal(atoms.positions, before_atoms[0])
        np.testing.assert_array_equal(atoms.cell.array, before_atoms[1])
        assert atoms.info == before_atoms[2] and atoms.calc is before_atoms[3]
        assert structure.as_dict() == before_structure
        assert results[0].structure is not atoms and results[1].structure is not structure


def test_structure_in_structure_out(morse_model, cu_cells):
    structure = AseAtomsAdaptor.get_structure(cu_cells[2])
    structure.add_site_property("tag", list(range(len(structure))))
    structure.properties = {"material_id": "mp-30"}
    mixed = [cu_cells[0], structure]
    for batched in (False, True):
        a, s = relax(mixed, morse_model, batched=batched)
        assert isinstance(a.structure, Atoms) and isinstance(s.structure, Structure)
        assert s.id == "mp-30" and a.id == "cu0"
        assert s.structure.site_properties["tag"] == list(range(len(structure)))
        assert s.structure.properties["material_id"] == "mp-30"
        assert s.structure.lattice.abc != pytest.approx(structure.lattice.abc, abs=1e-3)
    (again,) = relax(s.structure, morse_model, steps=0)
    assert again.energy == pytest.approx(s.energy, abs=1e-9)  # the Structure holds the relaxed geometry


def test_single_input_and_ids(morse_model, cu_cells):
    (r,) = relax(cu_cells[0], morse_model)
    assert r.id == "cu0" and r.index == 0
    rs = relax(cu_cells[:2], morse_model, ids=["a", "b"])
    assert [r.id for r in rs] == ["a", "b"]
    with pytest.raises(ValueError, match="2 ids for 1 structures"):
        relax(cu_cells[:1], morse_model, ids=["a", "b"])


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("batched", [False, True])
def test_unknown_element_names_the_structure(gnn_model, cu_cells, batched):
    bad = bulk("Au", "fcc", a=4.08)
    bad.info["id"] = "gold"
    with pytest.raises(RelaxationError, match=r"structure 1 \(id 'gold'\).*Au.*trained on: Cu") as info:
        relax([cu_cells[0], bad], gnn_model, batched=batched)
    assert info.value.index == 1 and info.value.structure_id == "gold"
    with pytest.warns(SkippedStructureWarning, match="1 of 3 structures failed"):
        results = relax([cu_cells[0], bad, cu_cells[1]], gnn_model, batched=batched, on_error="skip")
    assert results[1].error and "Au" in results[1].error and not results[1].converged
    assert np.isnan(results[1].energy) and results[1].structure is not bad
    assert results[0].ok and results[2].ok and results[2].converged


@pytest.mark.parametrize("batched", [False, True])
def test_overlapping_atoms_are_an_error(morse_model, cu_cells, batched):
    bad = cu_cells[1].copy()
    bad.positions[1] = bad.positions[0]
    with pytest.raises(RelaxationError, match=r"structure 2.*overlap"):
        relax([cu_cells[0], cu_cells[2], bad], morse_model, batched=batched, batch_size=2)
    with pytest.warns(SkippedStructureWarning, match="'cu1'.*overlap"):
        results = relax([cu_cells[0], bad, cu_cells[2]], morse_model, batched=batched, batch_size=2, on_error="skip")
    assert [r.ok for r in results] == [True, False, True]
    assert results[0].converged and results[2].converged


def test_bad_arguments(morse_model, cu_cells):
    with pytest.raises(ValueError, match="on_error"):
        relax(cu_cells, morse_model, on_error="ignore")
    with pytest.raises(ValueError, match="fmax"):
        relax(cu_cells, morse_model, fmax=0)
    with pytest.raises(TypeError, match="energy model"):
        from crystalgnn_plugins.models import PropertyModel

        relax(cu_cells, PropertyModel("cgcnn", {"atom_features": 4, "num_conv": 1}, target="x"))
    # a file name is one wrong input (not a sequence of characters), and the error says what to do
    with pytest.raises(RelaxationError, match=r"structure 0: .*got str \('in.cif': read files with ase.io.read"):
        relax("in.cif", morse_model)


@pytest.mark.parametrize("batched", [False, True])
def test_broken_inputs_are_caught_before_relaxing(morse_model, cu_cells, batched):
    nan = cu_cells[1].copy()
    nan.positions[0, 0] = np.nan
    flat = cu_cells[1].copy()
    flat.cell[2] = flat.cell[0]
    morse_model.calls.clear()
    for bad, match in ((nan, "non-finite"), (flat, "periodic cell is degenerate")):
        with pytest.raises(RelaxationError, match=rf"structure 1 \(id 'cu1'\): {match}"):
            relax([cu_cells[0], bad], morse_model, batched=batched)
    assert morse_model.calls == []  # nothing was evaluated

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import CalculationFailed, PropertyNotImplementedError
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from crystalgnn_plugins.calculators import GNNCalculator
from crystalgnn_plugins.models import (
    EnergyModel,
    ModelFileError,
    PropertyModel,
    UnknownElementError,
    save_model,
)


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, elements=["Cu", "Au"], hidden=8)
    return m.eval()


def test_implemented_properties_is_a_class_constant():
    assert set(GNNCalculator.implemented_properties) == {"energy", "free_energy", "energies", "forces", "stress"}


def test_results_shapes_units_and_consistency(model):
    atoms = bulk("Cu", "fcc", a=3.6).repeat(2)
    atoms.rattle(0.05, seed=0)
    atoms.calc = GNNCalculator(model, device="cpu")
    e = atoms.get_potential_energy()
    assert atoms.get_potential_energy(force_consistent=True) == e
    assert atoms.get_potential_energies().shape == (8,)
    assert np.isclose(atoms.get_potential_energies().sum(), e)
    assert atoms.get_forces().shape == (8, 3)
    assert atoms.get_stress().shape == (6,)
    assert atoms.get_stress(voigt=False).shape == (3, 3)
    np.testing.assert_allclose(atoms.get_forces().sum(0), 0, atol=1e-5)  # Newton's third law


def test_unknown_element_is_named(model):
    atoms = bulk("NaCl", "rocksalt", a=5.6)
    atoms.calc = GNNCalculator(model)
    with pytest.raises(UnknownElementError, match=r"Cl, Na.*trained on: Cu, Au"):
        atoms.get_potential_energy()


def test_isolated_atom_gives_finite_energy_and_zero_force(model):
    lone = Atoms("CuAu", positions=[[0, 0, 0], [10, 10, 10]], cell=np.eye(3) * 20, pbc=True)
    lone.calc = GNNCalculator(model)
    assert np.isfinite(lone.get_potential_energy())
    np.testing.assert_array_equal(lone.get_forces(), 0.0)
    np.testing.assert_allclose(lone.get_stress(), 0.0, atol=1e-12)
    # the isolated-atom energies are per-element constants: moving atoms apart changes nothing
    e1 = lone.get_potential_energy()
    lone.positions[1] += 1.0
    assert lone.get_potential_energy() == pytest.approx(e1)


def test_molecule_without_cell_has_no_stress(model):
    m = molecule("H2O")
    m.set_chemical_symbols(["Cu", "Au", "Au"])
    m.calc = GNNCalculator(model)
    assert np.isfinite(m.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        m.get_stress()


def test_dtype_and_device_are_explicit_and_global_state_untouched(model):
    before = torch.get_default_dtype()
    calc = GNNCalculator(model, device="cpu", dtype=torch.float64)
    assert calc.dtype == torch.float64 and calc.device.type == "cpu"
    atoms = bulk("Au", "fcc", a=4.1)
    atoms.calc = calc
    atoms.get_potential_energy()
    assert torch.get_default_dtype() == before


def test_path_and_errors(model, tmp_path):
    save_model(model, tmp_path / "m")
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = GNNCalculator(tmp_path / "m")
    e_disk = atoms.get_potential_energy()
    atoms.calc = GNNCalculator(model)
    assert e_disk == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    with pytest.raises(ModelFileError, match="no model 'nope'"):
        GNNCalculator("nope")
    with pytest.raises(TypeError, match="energy model"):
        GNNCalculator(PropertyModel("cgcnn", {"atom_features": 8, "num_conv": 1}))


def test_works_with_fire_and_frechet_cell_filter(model):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.02, seed=1)
    with torch.no_grad():
        model.scale.fill_(1000.0)  # an untrained model is nearly flat: make it worth relaxing
    atoms.calc = GNNCalculator(model, dtype=torch.float64)
    e0 = atoms.get_potential_energy()
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    opt.run(fmax=1e-4, steps=30)
    assert opt.nsteps > 0
    assert atoms.get_potential_energy() < e0
    assert next(model.parameters()).dtype == torch.float32  # the caller's model was not converted


def test_non_finite_results_raise_instead_of_reaching_the_optimiser(model):
    broken = EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, elements=["Cu"], hidden=8)
    with torch.no_grad():
        next(broken.head.parameters()).fill_(float("nan"))
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = GNNCalculator(broken.eval())
    with pytest.raises(CalculationFailed, match="Cu: the model gave non-finite energy, forces, stress"):
        atoms.get_potential_energy()


def test_the_callers_model_keeps_its_training_mode(model):
    from crystalgnn_plugins.relaxation import relax

    model.train()
    atoms = bulk("Cu", "fcc", a=3.7)
    atoms.calc = GNNCalculator(model)
    atoms.get_potential_energy()
    assert model.training
    for batched in (False, True):
        relax(atoms, model, steps=3, batched=batched)
        assert model.training

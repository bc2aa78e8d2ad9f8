"""The models that ship inside the package: they load offline by name, with no
argument, and behave physically (what a user relies on first)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from crystalgnn_plugins import GNNCalculator
from crystalgnn_plugins.models.pretrained import PRETRAINED_DIR, available_models


def test_shipped_models_register_through_the_hook():
    from crystalgnn_plugins.plugins import get_registry

    registry = get_registry("pretrained")
    for name in ("default", "generator", "carbon-guide"):
        assert (PRETRAINED_DIR / name / "model.json").is_file(), name
        assert name in available_models()
        assert registry.entry(name).plugin.startswith("crystalgnn_plugins.builtins")
        size = sum(f.stat().st_size for f in (PRETRAINED_DIR / name).iterdir())
        assert size < 5e6, f"{name}: {size} bytes shipped"


@pytest.fixture(scope="module")
def perovskite():
    """Rattled cubic SrTiO3 (5 atoms, a = 3.95 Å)."""
    from ase import Atoms

    atoms = Atoms(
        "SrTiO3", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=np.eye(3) * 3.95, pbc=True,
    )
    atoms.rattle(0.05, seed=1)
    return atoms


def test_default_potential_forces_are_minus_the_energy_gradient(perovskite):
    atoms = perovskite.copy()
    atoms.calc = GNNCalculator(dtype=torch.float64)  # no argument: the shipped default
    forces = atoms.get_forces()
    assert np.abs(forces.sum(0)).max() < 1e-8  # no net force on a periodic cell
    h, i = 1e-4, 2
    for k in range(3):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        plus.calc = minus.calc = atoms.calc
        fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert forces[i, k] == pytest.approx(fd, abs=1e-5)
    stress = atoms.get_stress()
    assert np.all(np.isfinite(stress)) and stress.shape == (6,)


@pytest.mark.parametrize("pair", ["Si-Si", "C-C", "Ti-O", "Cs-Au", "O-O", "H-H"])
def test_default_potential_pushes_close_atoms_apart(pair):
    """Isolated dimers closer than 0.3 of their covalent bond length, where no training
    pair is: the energy rises as they close in and the force pushes them apart."""
    from ase import Atoms
    from ase.data import atomic_numbers, covalent_radii

    a, b = pair.split("-")
    bond = covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]]
    calc = GNNCalculator()
    energies, forces = [], []
    for ratio in (0.28, 0.22, 0.16):
        atoms = Atoms([a, b], positions=[[0, 0, 0], [ratio * bond, 0, 0]], cell=[12, 12, 12], pbc=True)
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces()[1, 0])
    assert energies[0] < energies[1] < energies[2], energies
    assert min(forces) > 0, forces


@pytest.mark.parametrize("element, a0, a_teacher", [("Cu", 3.61, 3.6164), ("Al", 4.05, 4.0389)])
def test_default_potential_relaxes_metals_to_the_teachers_lattice_constant(element, a0, a_teacher):
    """CHGNet 0.3.0 (the teacher) relaxes fcc Cu to a = 3.6164 Å and Al to 4.0389 Å
    (FIRE + FrechetCellFilter, fmax 0.02 eV/Å, from a 3 % expanded cell)."""
    atoms = bulk(element, "fcc", a=a0 * 1.03, cubic=True)
    atoms.calc = GNNCalculator()
    assert FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.02, steps=300)
    assert atoms.get_volume() ** (1 / 3) == pytest.approx(a_teacher, rel=0.01)


def test_default_generator_gives_valid_crystals_of_each_condition():
    from crystalgnn_plugins.generation import CrystalStructureSource
    from crystalgnn_plugins.metrics.generation import structural_validity

    source = CrystalStructureSource(physics=False)
    perov = source.get_structures(4, condition="perov_5", seed=0)
    carbon = source.get_structures(4, condition="carbon_24", seed=0)
    assert all(len(s) == 5 and structural_validity(s) for s in perov)
    assert all(set(s.composition.chemical_system.split("-")) == {"C"} and structural_validity(s) for s in carbon)
    sto = source.get_structures(2, composition="SrTiO3", seed=1)
    assert all(s.composition.reduced_formula == "SrTiO3" for s in sto)


def test_carbon_guide_agrees_with_the_default_potential_on_diamond():
    """The small carbon_24 guide (a carbon-only potential) and the default potential
    on rattled diamond: energy per atom within 30 meV, forces within 0.1 eV/Å on average."""
    atoms = bulk("C", "diamond", a=3.57) * (2, 1, 1)
    atoms.rattle(0.05, seed=0)
    got = []
    for model in ("carbon-guide", None):
        a = atoms.copy()
        a.calc = GNNCalculator(model)
        got.append((a.get_potential_energy() / len(a), a.get_forces()))
    (e_guide, f_guide), (e_default, f_default) = got
    assert abs(e_guide - e_default) < 0.03
    assert np.abs(f_guide - f_default).mean() < 0.1 < np.abs(f_default).mean()


def test_default_generator_guides_carbon_with_the_carbon_guide_and_latent_bank():
    from crystalgnn_plugins.generation import CrystalStructureSource
    from crystalgnn_plugins.metrics.generation import structural_validity

    source = CrystalStructureSource()
    assert source.guidance_models["carbon_24"] == "carbon-guide" and source.guidance_models["perov_5"] is None
    carbon = source.get_structures(2, condition="carbon_24", seed=0)
    assert all(structural_validity(s) for s in carbon)
    assert carbon[0].properties["generation"]["energy_guide"] == "carbon-guide"
    assert "EnergyTerm" in carbon[0].properties["generation"]["guidance"]
    # carbon_24's free samples take their latent codes from the shipped latent bank
    assert (PRETRAINED_DIR / "generator" / "latent_bank.npz").is_file()
    assert source.uses_latent("carbon_24") and not source.uses_latent("perov_5")
    assert all(s.properties["generation"]["latent"] == "bank" for s in carbon)

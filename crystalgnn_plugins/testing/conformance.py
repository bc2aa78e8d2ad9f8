"""A conformance kit for encoders: subclass :class:`EncoderConformance`,
set ``encoder`` (registry name) and ``encoder_kwargs``, and pytest collects the
physics checks (invariances, extensivity, batching and, for smooth encoders,
forces and stress against finite differences and continuity at the cutoff)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.build import make_supercell
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from scipy.spatial.transform import Rotation

from crystalgnn_plugins.testing.structures import random_crystal


class EncoderConformance:
    """Mixin of physics tests for an encoder, run in float64.

    Class attributes:
        encoder: registry name of the encoder under test.
        encoder_kwargs: small settings to keep the tests fast.
        species: chemical symbols used in the random crystals.
    """

    encoder: ClassVar[str] = ""
    encoder_kwargs: ClassVar[dict[str, Any]] = {}
    species: ClassVar[tuple[str, ...]] = ("Cu", "Ag", "Au")
    seeds: ClassVar[tuple[int, ...]] = (0, 1)

    # --------------------------------------------------------------- helpers
    def make_energy_model(self):
        from crystalgnn_plugins.models import EnergyModel

        torch.manual_seed(0)
        model = EnergyModel(self.encoder, dict(self.encoder_kwargs), hidden=16, num_hidden=1)
        # non-trivial per-element references, so they are exercised too
        with torch.no_grad():
            model.reference_energies[1:].uniform_(-3.0, -1.0)
            # random BatchNorm statistics, if any, so eval-mode norms are not identities
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        return model.double().eval()

    def calculator(self, model=None):
        from crystalgnn_plugins.calculators import GNNCalculator

        return GNNCalculator(model or self.make_energy_model(), device="cpu", dtype=torch.float64)

    def crystal(self, seed: int, num_atoms: int = 5) -> Atoms:
        return random_crystal(seed, num_atoms, self.species)

    @staticmethod
    def _energy(calc, atoms: Atoms) -> float:
        atoms = atoms.copy()
        atoms.calc = calc
        return atoms.get_potential_energy()

    # ----------------------------------------------------------------- tests
    def test_translation_invariance(self):
        calc = self.calculator()
        for seed in self.seeds:
            atoms = self.crystal(seed)
            moved = atoms.copy()
            moved.translate([0.37, -1.2, 2.9])
            moved.wrap()
            assert abs(self._energy(calc, atoms) - self._energy(calc, moved)) < 1e-8

    def test_rotation_invariance_and_force_equivariance(self):
        calc = self.calculator()
        for seed in self.seeds:
            atoms = self.crystal(seed)
            rot = Rotation.random(random_state=seed).as_matrix()
            turned = atoms.copy()
            turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=True)
            a, b = atoms.copy(), turned.copy()
            a.calc = calc
            ea, fa = a.get_potential_energy(), a.get_forces()
            b.calc = calc
            eb, fb = b.get_potential_energy(), b.get_forces()
            assert abs(ea - eb) < 1e-8
            np.testing.assert_allclose(fa @ rot.T, fb, atol=1e-8)

    def test_permutation_invariance(self):
        calc = self.calculator()
        for seed in self.seeds:
            atoms = self.crystal(seed)
            perm = np.random.default_rng(seed).permutation(len(atoms))
            a = atoms.copy()
            a.calc = calc
            b = atoms[perm]
            b.calc = calc
            assert abs(a.get_potential_energy() - b.get_potential_energy()) < 1e-8
            np.testing.assert_allclose(a.get_forces()[perm], b.get_forces(), atol=1e-8)

    def test_unit_cell_choice_and_extensivity(self):
        calc = self.calculator()
        atoms = self.crystal(self.seeds[0])
        e1 = self._energy(calc, atoms)
        e8 = self._energy(calc, atoms.repeat((2, 2, 2)))
        assert abs(e8 - 8 * e1) < 1e-7 * max(1.0, abs(e8))
        # another primitive cell of the same crystal (unimodular transformation)
        other = make_supercell(atoms, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
        assert abs(self._energy(calc, other) - e1) < 1e-8 * max(1.0, abs(e1))

    def test_batch_equals_one_by_one(self):
        model = self.make_energy_model()
        crystals = [self.crystal(s, n) for s, n in zip((3, 4, 5), (3, 5, 7))]
        batched = model(model.graphs(crystals))
        for k, atoms in enumerate(crystals):
            single = model(model.graph(atoms))
            assert torch.allclose(batched["energy"][k], single["energy"][0], atol=1e-9)
            assert torch.allclose(batched["stress"][k], single["stress"][0], atol=1e-9)
        forces = torch.cat([model(model.graph(a))["forces"] for a in crystals])
        assert torch.allclose(batched["forces"], forces, atol=1e-9)

    def _require_smooth(self):
        import pytest

        from crystalgnn_plugins.encoders import build_encoder

        if not build_encoder(self.encoder, **self.encoder_kwargs).smooth:
            pytest.skip("encoder is not smooth (hard neighbour truncation)")

    def test_forces_match_finite_differences(self):
        self._require_smooth()
        calc = self.calculator()
        for seed in self.seeds:
            atoms = self.crystal(seed)
            atoms.calc = calc
            numeric = calculate_numerical_forces(atoms, eps=1e-4)
            assert np.abs(atoms.get_forces() - numeric).max() < 1e-4

    def test_stress_matches_finite_differences(self):
        self._require_smooth()
        calc = self.calculator()
        for seed in self.seeds:
            atoms = self.crystal(seed)
            atoms.calc = calc
            numeric = calculate_numerical_stress(atoms, eps=1e-5)
            assert np.abs(atoms.get_stress() - numeric).max() < 1e-5

    def test_energy_continuous_across_cutoff(self):
        self._require_smooth()
        calc = self.calculator()
        cutoff = calc.model.cutoff
        energies, forces = [], []
        for d in np.linspace(cutoff - 0.02, cutoff + 0.02, 41):
            dimer = Atoms(self.species[:2], positions=[[0, 0, 0], [d, 0, 0]], pbc=False)
            dimer.calc = calc
            energies.append(dimer.get_potential_energy())
            forces.append(dimer.get_forces()[1, 0])
        assert np.abs(np.diff(energies)).max() < 1e-6
        assert np.abs(np.diff(forces)).max() < 1e-4
        assert abs(energies[-1] - energies[-2]) == 0.0  # beyond the cutoff nothing changes

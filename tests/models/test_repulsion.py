"""The ZBL core repulsion of the energy model: values, smoothness, physics checks
(the encoder conformance kit on crystals with pairs inside the switching range),
save/load and soft species."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import covalent_radii

from crystalgnn_plugins.models import EnergyModel, load_model, save_model
from crystalgnn_plugins.models.repulsion import (
    DEFAULT_INNER,
    DEFAULT_OUTER,
    CoreRepulsion,
    smooth_switch,
    zbl_pair_energy,
)
from crystalgnn_plugins.testing import EncoderConformance
from crystalgnn_plugins.testing.structures import random_crystal

PAINN = {"atom_features": 8, "num_layers": 1, "cutoff": 3.5}  # the repulsion reaches 3.1 Å (Fr-Fr)


def _zbl_numpy(z1: float, z2: float, r: float) -> float:
    """ZBL universal screened Coulomb energy (eV), written out independently."""
    a = 0.8854 * 0.529177 / (z1**0.23 + z2**0.23)
    x = r / a
    phi = (0.1818 * np.exp(-3.2 * x) + 0.5099 * np.exp(-0.9423 * x)
           + 0.2802 * np.exp(-0.4029 * x) + 0.02817 * np.exp(-0.2016 * x))  # fmt: skip
    return 14.3996 * z1 * z2 / r * phi


def _model(core_repulsion: bool = True) -> EnergyModel:
    torch.manual_seed(0)
    return EnergyModel("painn", dict(PAINN), hidden=8, num_hidden=1, core_repulsion=core_repulsion).double().eval()


def _dimer(pair: tuple[str, str], d: float) -> Atoms:
    return Atoms(pair, positions=[[0, 0, 0], [d, 0, 0]], cell=[12, 12, 12], pbc=True)


@pytest.mark.parametrize(("z1", "z2", "r"), [(1, 1, 0.3), (6, 6, 0.5), (14, 8, 0.8), (79, 55, 1.2)])
def test_zbl_pair_energy_matches_the_published_form(z1, z2, r):
    got = zbl_pair_energy(torch.tensor(float(z1)), torch.tensor(float(z2)), torch.tensor(r)).item()
    assert got == pytest.approx(_zbl_numpy(z1, z2, r), rel=2e-3)


def test_switch_is_one_inside_zero_outside_and_flat_at_both_ends():
    r = torch.linspace(0.0, 2.0, 401, dtype=torch.float64, requires_grad=True)
    s = smooth_switch(r, torch.tensor(0.5), torch.tensor(1.5))
    assert torch.all(s[r <= 0.5] == 1) and torch.all(s[r >= 1.5] == 0)
    assert torch.all(s[1:] <= s[:-1])  # monotonic
    (grad,) = torch.autograd.grad(s.sum(), r)
    for end in (0.5, 1.5):
        assert grad[torch.isclose(r, torch.tensor(end, dtype=torch.float64))].abs().item() < 1e-12


def test_energy_difference_is_the_switched_zbl_of_the_close_pair():
    with_rep, without = _model(True), _model(False)
    bond = covalent_radii[14] + covalent_radii[8]
    for d in (0.4, 0.8, 1.0, 1.5):
        g = with_rep.graph(_dimer(("Si", "O"), d)).to(dtype=torch.float64)
        diff = with_rep(g, compute_stress=False)["energy"] - without(g, compute_stress=False)["energy"]
        switch = smooth_switch(torch.tensor(d), torch.tensor(DEFAULT_INNER * bond), torch.tensor(DEFAULT_OUTER * bond))
        assert diff.item() == pytest.approx(_zbl_numpy(14, 8, d) * switch.item(), rel=2e-3, abs=1e-12)
    assert diff.item() == 0.0  # 1.5 Å: beyond 0.4 of the Si-O bond length, no repulsion at all


def test_dimer_energy_rises_steeply_at_short_range():
    calc_model = _model(True)
    energies = []
    for d in (0.2, 0.3, 0.4, 0.5):
        g = calc_model.graph(_dimer(("Si", "Si"), d)).to(dtype=torch.float64)
        energies.append(calc_model(g, compute_stress=False)["energy"].item())
    assert all(a > b + 10.0 for a, b in zip(energies, energies[1:]))


def test_saved_and_loaded_with_the_repulsion(tmp_path):
    model = _model(True)
    path = tmp_path / "m"
    save_model(model, path)
    loaded = load_model(path)
    assert isinstance(loaded.core_repulsion, CoreRepulsion)
    g = model.graph(_dimer(("C", "C"), 0.6)).to(dtype=torch.float64)
    assert torch.allclose(model(g)["energy"], loaded.double()(g)["energy"])
    assert "core_repulsion" not in _model(False).get_config()  # older models load unchanged
    off = _model(False)
    off.set_core_repulsion(True)
    assert off.get_config()["core_repulsion"] is True


def test_soft_species_one_hot_and_mixed():
    from dataclasses import replace

    model = _model(True)
    model.set_core_repulsion(True, *KIT_RANGE)
    atoms = TestPaiNNWithCoreRepulsion().crystal(3)  # has a pair inside the switching range
    g = model.graph(atoms).to(dtype=torch.float64)
    repulsion = model.core_repulsion(g, g.edge_vectors(g.positions, g.cell))
    assert repulsion.sum().item() > 1e-3
    weights = torch.zeros(len(atoms), 119, dtype=torch.float64)
    weights[torch.arange(len(atoms)), g.atomic_numbers] = 1.0
    soft = model.core_repulsion(replace(g, species_weights=weights), g.edge_vectors(g.positions, g.cell))
    torch.testing.assert_close(soft, repulsion)
    # half C, half Si everywhere: the weighted mean Z (10) and covalent radius
    mixed = torch.zeros_like(weights)
    mixed[:, 6] = mixed[:, 14] = 0.5
    d = 0.45
    pair = Atoms("CC", positions=[[0, 0, 0], [d, 0, 0]], cell=[12, 12, 12], pbc=True)
    gp = model.graph(pair).to(dtype=torch.float64)
    got = model.core_repulsion(replace(gp, species_weights=mixed[:2]), gp.edge_vectors(gp.positions, gp.cell)).sum()
    bond = 0.5 * (covalent_radii[6] + covalent_radii[14]) * 2
    switch = smooth_switch(torch.tensor(d), torch.tensor(KIT_RANGE[0] * bond), torch.tensor(KIT_RANGE[1] * bond))
    assert got.item() == pytest.approx(_zbl_numpy(10, 10, d) * switch.item(), rel=2e-3)


def test_a_saved_switch_range_is_kept(tmp_path):
    """A model keeps the range it was saved with, whatever the current default."""
    model = _model(False)
    model.set_core_repulsion(True, inner=0.3, outer=0.6)
    loaded = load_model(save_model(model, tmp_path / "m")).double()
    assert (loaded.core_repulsion.inner, loaded.core_repulsion.outer) == pytest.approx((0.3, 0.6))
    g = model.graph(_dimer(("Si", "O"), 0.9)).to(dtype=torch.float64)  # 0.51 of the bond: only in 0.3-0.6
    assert loaded(g)["energy"].item() == pytest.approx(model(g)["energy"].item())
    assert model(g)["energy"].item() > _model(True)(g)["energy"].item() + 1.0


def test_checkpoint_with_and_without_repulsion_do_not_mix():
    with_rep, without = _model(True), _model(False)
    with pytest.raises(RuntimeError, match="switch_range"):
        without.load_state_dict(with_rep.state_dict())
    with pytest.raises(RuntimeError, match="switch_range"):
        with_rep.load_state_dict(without.state_dict())


def test_cutoff_must_cover_the_repulsion_and_neighbour_caps_warn():
    with pytest.raises(ValueError, match="beyond the encoder's cutoff"):
        EnergyModel("painn", {"atom_features": 8, "num_layers": 1, "cutoff": 1.5}, core_repulsion=True)
    light = EnergyModel("painn", {"atom_features": 8, "num_layers": 1, "cutoff": 1.5}, elements=["C", "O"])
    light.set_core_repulsion(True)  # C and O reach only 0.61 Å
    with pytest.raises(ValueError, match="beyond the encoder's cutoff"):
        light.set_core_repulsion(True, outer=1.2)  # 1.82 Å
    with pytest.warns(UserWarning, match="neighbours per atom"):
        EnergyModel("cgcnn", {"atom_features": 8, "num_conv": 1}, core_repulsion=True)


def test_bad_switch_range_rejected():
    with pytest.raises(ValueError, match="inner"):
        CoreRepulsion(inner=0.7, outer=0.6)


#: a wider switching range than the default, so that random crystals have pairs in it
#: (the default range starts below any pair of the teacher data)
KIT_RANGE = (0.3, 0.6)


class TestPaiNNWithCoreRepulsion(EncoderConformance):
    """The conformance kit on dense random crystals: pairs lie in the switching range."""

    encoder = "painn"
    encoder_kwargs = PAINN
    species = ("Si", "O", "C")

    def make_energy_model(self):
        model = super().make_energy_model()
        model.set_core_repulsion(True, *KIT_RANGE)
        return model

    def crystal(self, seed: int, num_atoms: int = 5) -> Atoms:
        atoms = random_crystal(seed, num_atoms, self.species, volume_per_atom=5.0, min_distance=0.55)
        d = atoms.get_all_distances(mic=True)
        z = atoms.numbers
        bond = covalent_radii[z][:, None] + covalent_radii[z][None, :]
        ratio = (d / bond)[~np.eye(len(atoms), dtype=bool)]
        assert ((ratio > KIT_RANGE[0]) & (ratio < KIT_RANGE[1])).any(), "no pair in the switching range"
        return atoms


def test_conformance_crystals_exercise_the_repulsion():
    kit = TestPaiNNWithCoreRepulsion()
    model = kit.make_energy_model()
    plain = kit.make_energy_model()
    plain.set_core_repulsion(False)
    atoms = kit.crystal(0)
    g = model.graph(atoms).to(dtype=torch.float64)
    assert (model(g)["energy"] - plain(g)["energy"]).abs().item() > 1e-3

"""The energy model's network floor: below a fraction of the covalent bond length the
encoder sees a constant distance, so the learned energy is flat there and only the ZBL
repulsion acts. Values of the floor function, unchanged predictions elsewhere, the
conformance kit on crystals with pairs inside the floor's range, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import covalent_radii

from crystalgnn_plugins.models import EnergyModel, load_model, save_model
from crystalgnn_plugins.models.repulsion import (
    DEFAULT_FLOOR_LOWER,
    DEFAULT_FLOOR_UPPER,
    DistanceFloor,
    smooth_floor,
)
from crystalgnn_plugins.testing import EncoderConformance
from crystalgnn_plugins.testing.structures import random_crystal

PAINN = {"atom_features": 8, "num_layers": 2, "cutoff": 3.5}
SI_BOND = 2 * covalent_radii[14]


def _model(*, floor: bool, repulsion: bool = False) -> EnergyModel:
    torch.manual_seed(0)
    model = EnergyModel("painn", dict(PAINN), hidden=8, num_hidden=1, core_repulsion=repulsion, network_floor=floor)
    return model.double().eval()


def _dimer(d: float, pair: str = "SiSi") -> Atoms:
    return Atoms(pair, positions=[[0, 0, 0], [d, 0, 0]], cell=[12, 12, 12], pbc=True)


def _energy_force(model: EnergyModel, atoms: Atoms) -> tuple[float, float]:
    out = model(model.graph(atoms).to(dtype=torch.float64), compute_stress=False)
    return out["energy"].item(), out["forces"][1, 0].item()


def test_floor_is_identity_above_constant_below_and_continuously_differentiable():
    r = torch.linspace(0.0, 2.0, 2001, dtype=torch.float64, requires_grad=True)
    lower, upper = torch.tensor(0.6, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    f = smooth_floor(r, lower, upper)
    (slope,) = torch.autograd.grad(f.sum(), r)
    assert torch.equal(f[r >= 1.0], r[r >= 1.0])
    assert torch.allclose(f[r <= 0.6], torch.tensor(0.8, dtype=torch.float64))
    assert torch.all(f[1:] >= f[:-1]) and torch.all(f >= r.clamp_min(0.8) - 1e-12)  # monotone, never shorter
    assert torch.all((slope >= 0) & (slope <= 1 + 1e-12))
    assert slope[(r - 0.6).abs() < 1e-9].item() == pytest.approx(0.0, abs=1e-12)
    assert slope[(r - 1.0).abs() < 1e-9].item() == pytest.approx(1.0, abs=1e-12)
    assert (slope[1:] - slope[:-1]).abs().max().item() < 0.01  # no jump in the slope


def test_edge_vectors_keep_their_direction_and_only_close_pairs_change():
    floor = DistanceFloor(0.3, 0.4).double()
    model = _model(floor=False)
    atoms = Atoms("SiSiSi", positions=[[0, 0, 0], [0.5, 0.2, 0.1], [2.3, 0, 0]], cell=[12, 12, 12], pbc=True)
    g = model.graph(atoms).to(dtype=torch.float64)
    vec = g.edge_vectors(g.positions, g.cell)
    seen = floor(g, vec)
    r, r_seen = vec.norm(dim=-1), seen.norm(dim=-1)
    close = r < 0.4 * SI_BOND
    assert close.any() and (~close).any()
    assert torch.equal(seen[~close], vec[~close])
    assert torch.all(r_seen[close] > r[close])
    assert torch.allclose(r_seen[r < 0.3 * SI_BOND], torch.tensor(0.35 * SI_BOND, dtype=torch.float64))
    torch.testing.assert_close(seen / r_seen[:, None], vec / r[:, None])


def test_predictions_unchanged_without_close_pairs():
    plain, floored = _model(floor=False), _model(floor=True)
    for seed in range(3):
        atoms = random_crystal(seed, 6, ("Si", "O", "Ti"), volume_per_atom=12.0, min_distance=1.0)
        g = plain.graph(atoms).to(dtype=torch.float64)
        a, b = plain(g), floored(g)
        for key in ("energy", "forces", "stress"):
            assert torch.equal(a[key], b[key]), key


def test_learned_energy_is_flat_below_the_floor_and_only_the_repulsion_pushes():
    floored = _model(floor=True)
    below = [d * SI_BOND for d in (0.05, 0.15, 0.25, 0.29)]
    values = [_energy_force(floored, _dimer(d)) for d in below]
    assert max(e for e, _ in values) - min(e for e, _ in values) < 1e-9
    assert all(abs(f) < 1e-9 for _, f in values)
    assert len({round(_energy_force(_model(floor=False), _dimer(d))[0], 6) for d in below}) > 1  # without: not flat
    with_zbl = _model(floor=True, repulsion=True)
    values = [_energy_force(with_zbl, _dimer(d)) for d in below]
    assert all(e1 > e2 for (e1, _), (e2, _) in zip(values, values[1:]))  # rises as the atoms close in
    assert all(f > 0 for _, f in values)  # the force on atom 2 points away from atom 1


def test_saved_and_loaded_with_its_range(tmp_path):
    model = _model(floor=False, repulsion=True)
    assert "network_floor" not in model.get_config()  # older models load unchanged
    model.set_network_floor(True, lower=0.25, upper=0.45)
    loaded = load_model(save_model(model, tmp_path / "m")).double()
    assert loaded.get_config()["network_floor"] is True
    assert (loaded.network_floor.lower, loaded.network_floor.upper) == pytest.approx((0.25, 0.45))
    atoms = _dimer(0.8)  # 0.36 of the Si-Si bond: inside the floor's range
    assert _energy_force(loaded, atoms) == pytest.approx(_energy_force(model, atoms))
    model.set_network_floor(False)
    assert model.network_floor is None and "network_floor" not in model.get_config()
    assert (DEFAULT_FLOOR_LOWER, DEFAULT_FLOOR_UPPER) == (_model(floor=True).network_floor.lower,
                                                          _model(floor=True).network_floor.upper)


def test_bad_floor_range_rejected():
    with pytest.raises(ValueError, match="lower"):
        DistanceFloor(lower=0.5, upper=0.4)
    with pytest.raises(ValueError, match="lower"):
        DistanceFloor(lower=0.0, upper=0.4)


#: a wider range than the default, so that random crystals have pairs inside it
KIT_RANGE = (0.45, 0.7)


class TestPaiNNWithNetworkFloor(EncoderConformance):
    """The conformance kit (finite-difference forces and stress, invariances) on dense
    random crystals whose pairs lie inside the floor's range."""

    encoder = "painn"
    encoder_kwargs = PAINN
    species = ("Si", "O", "C")

    def make_energy_model(self):
        model = super().make_energy_model()
        model.set_network_floor(True, *KIT_RANGE)
        return model

    def crystal(self, seed: int, num_atoms: int = 5) -> Atoms:
        atoms = random_crystal(seed, num_atoms, self.species, volume_per_atom=5.0, min_distance=0.55)
        d = atoms.get_all_distances(mic=True)
        bond = covalent_radii[atoms.numbers][:, None] + covalent_radii[atoms.numbers][None, :]
        ratio = (d / bond)[~np.eye(len(atoms), dtype=bool)]
        assert ((ratio > KIT_RANGE[0]) & (ratio < KIT_RANGE[1])).any(), "no pair in the floor's range"
        return atoms


def test_conformance_crystals_exercise_the_floor():
    kit = TestPaiNNWithNetworkFloor()
    model, plain = kit.make_energy_model(), kit.make_energy_model()
    plain.set_network_floor(False)
    g = model.graph(kit.crystal(0)).to(dtype=torch.float64)
    assert (model(g)["energy"] - plain(g)["energy"]).abs().item() > 1e-6

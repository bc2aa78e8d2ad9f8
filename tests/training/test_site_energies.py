"""Per-atom (site) energies as an extra training target: readers, loss, train()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect

from crystalgnn_plugins.data import DataError, read_ase_db, read_extxyz
from crystalgnn_plugins.data.records import Record
from crystalgnn_plugins.models import EnergyModel
from crystalgnn_plugins.training import train
from crystalgnn_plugins.training.losses import EnergyForceStressLoss


def _emt_frames(n: int, seed: int) -> list[Record]:
    """Rattled fcc Cu and Cu3Au-like cells with EMT energies, forces and site energies."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.symbols[0] = "Au" if k % 2 else "Cu"
        atoms.set_cell(atoms.cell.array * rng.uniform(0.97, 1.03), scale_atoms=True)
        atoms.rattle(0.08, seed=int(rng.integers(1_000_000)))
        atoms.calc = EMT()
        targets = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
                   "energies": atoms.get_potential_energies()}
        atoms.calc = None
        out.append(Record(id=f"f{seed}-{k}", atoms=atoms, targets=targets, source=f"emt:{k}"))
    return out


def test_loss_site_term_is_masked_and_weighted():
    pred = {"energy": torch.tensor([1.0]), "energies": torch.tensor([0.2, 0.8, 5.0])}
    target = {"energy": torch.tensor([1.0]), "num_atoms": torch.tensor([3]),
              "energies": torch.tensor([0.0, 1.0, 0.0]), "energies_mask": torch.tensor([True, True, False])}
    assert "energies" not in EnergyForceStressLoss(kind="mse").terms(pred, target)  # weight 0: no term
    loss = EnergyForceStressLoss(kind="mse", site_energy_weight=2.0)
    terms = loss.terms(pred, target)
    assert terms["energies"].item() == pytest.approx((0.2**2 + 0.2**2) / 2)  # the masked atom is out
    assert loss(pred, target).item() == pytest.approx(2.0 * terms["energies"].item())


def _model() -> EnergyModel:
    torch.manual_seed(0)
    return EnergyModel("smooth_cgcnn", {"atom_features": 16, "num_conv": 2, "cutoff": 4.5}, hidden=16).double()


def _site_mae(model, records) -> float:
    from crystalgnn_plugins.training.evaluate import evaluate

    return evaluate(model, records, ["energy", "energies"])["site_energies"]["mae"]


def test_training_on_site_energies_learns_them(tmp_path):
    train_set, val_set = _emt_frames(40, 1), _emt_frames(12, 2)
    kwargs = dict(epochs=25, batch_size=8, lr=5e-3, progress=False, seed=0)
    plain = train(train_set, val_set, model=_model(), targets=["energy", "forces"], **kwargs)
    sites = train(train_set, val_set, model=_model(), targets=["energy", "forces", "energies"],
                  weights={"energies": 1.0}, out_dir=tmp_path, **kwargs)
    metrics = sites.report["metrics"]["val"]
    assert metrics["site_energies"]["mae"] == pytest.approx(_site_mae(sites.model, val_set))
    # a total energy does not fix how it splits between Cu and Au sites; the site labels do
    assert _site_mae(sites.model, val_set) < 0.5 * _site_mae(plain.model, val_set)
    assert metrics["site_energies"]["mae"] < 0.3  # eV; EMT's Cu and Au sites differ by ~1.7 eV here
    log = (next(tmp_path.glob("logs/version_*/metrics.csv"))).read_text().splitlines()[0].split(",")
    assert {"val_energy", "val_forces", "val_energies"} <= set(log)  # unweighted terms, comparable across runs


def test_site_energies_must_be_asked_for_and_present():
    train_set, val_set = _emt_frames(8, 1), _emt_frames(4, 2)
    result = train(train_set, val_set, model=_model(), epochs=1, batch_size=8, progress=False)
    assert result.report["targets"] == ["energy", "forces"]  # never a default target
    with pytest.raises(ValueError, match="not \\['charges'\\]"):
        train(train_set, val_set, model=_model(), targets=["energy", "charges"], epochs=1, progress=False)
    for r in train_set:
        r.targets.pop("energies")
    with pytest.raises(ValueError, match="no training record has them"):
        train(train_set, val_set, model=_model(), targets=["energy", "energies"], epochs=1, progress=False)


def test_readers_find_per_atom_energies(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.calc = SinglePointCalculator(atoms, energy=-7.0, forces=np.zeros((2, 3)), energies=np.array([-3.4, -3.6]))
    path = tmp_path / "f.db"
    db = connect(path)
    db.write(atoms, name="good", data={"energies": np.array([-3.4, -3.6])})
    db.write(atoms, name="plain")
    good, plain = read_ase_db(path)
    np.testing.assert_allclose(good.targets["energies"], [-3.4, -3.6])
    assert "energies" not in plain.targets
    db.write(atoms, name="bad", data={"energies": np.array([-7.0])})
    with pytest.raises(DataError, match="'bad'.*per-atom energies have shape \\(1,\\), expected \\(2,\\)"):
        read_ase_db(path, selection="name=bad")

    from ase.io import write

    write(tmp_path / "f.xyz", atoms, format="extxyz")
    (frame,) = read_extxyz(tmp_path / "f.xyz")
    np.testing.assert_allclose(frame.targets["energies"], [-3.4, -3.6])

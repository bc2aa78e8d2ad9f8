"""benchmarks/potential_data/add_site_energies.py and the reading of its labels
(CHGNet's per-atom energies; the labelling test is skipped without chgnet). No ../shared data."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect

from crystalgnn_plugins.data import read_ase_db

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "potential_data"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def _frames():
    si = bulk("Si", "diamond", a=5.43)
    si.rattle(0.05, seed=1)
    nacl = bulk("NaCl", "rocksalt", a=5.6)
    nacl.rattle(0.05, seed=2)
    return [si, nacl, bulk("Cu", "fcc", a=3.6)]


def test_site_energies_sum_to_the_teachers_energy_and_resume(tmp_path):
    pytest.importorskip("chgnet")
    A = importlib.import_module("add_site_energies")
    from pd_teacher import Teacher

    frames = _frames()
    labels = Teacher(threads=1).label(frames)
    for atoms, lab in zip(frames, labels, strict=True):  # new frames come with their site energies
        assert lab["energies"].shape == (len(atoms),)
        assert lab["energies"].sum() == pytest.approx(lab["energy"], abs=1e-4 * len(atoms))
    path = str(tmp_path / "frames.db")
    db = connect(path)
    for k, (atoms, lab) in enumerate(zip(frames, labels, strict=True)):
        atoms.calc = SinglePointCalculator(atoms, energy=lab["energy"] + (1.0 if k == 2 else 0.0),
                                           forces=lab["forces"], stress=lab["stress"])
        db.write(atoms, split="train", teacher="chgnet-0.3.0", parent_id=f"p{k}")
    assert A.main(["--db", path, "--chunk", "2"]) == 1  # the Cu row's energy is not the teacher's
    rows = list(connect(path).select())
    for row in rows[:2]:
        assert row.data["energies"].shape == (row.natoms,)
        assert row.data["energies"].sum() == pytest.approx(row.energy, abs=1e-3 * row.natoms)
    assert "energies" not in rows[2].data  # reported, not stored
    si = rows[0].data["energies"]
    assert np.ptp(si) < 0.05  # a lightly rattled diamond: equivalent sites, nearly equal energies
    # read as the per-atom target; a second run only retries the mismatched row
    assert read_ase_db(path, selection="parent_id=p1")[0].targets["energies"].shape == (2,)
    assert A.main(["--db", path]) == 1
    assert len(A.pending_rows(connect(path), None)) == 1


def test_stored_site_energies_are_read_where_rows_have_them(tmp_path):
    """What train_default.py --site-energy-weight reads: energies/forces/stress of every row,
    the per-atom energies of the rows that have them."""
    path = str(tmp_path / "frames.db")
    db = connect(path)
    for k in range(3):
        atoms = bulk("Cu", "fcc", a=3.6) * (k + 1, 1, 1)
        atoms.calc = SinglePointCalculator(atoms, energy=-3.0 * (k + 1), forces=np.zeros((k + 1, 3)), stress=np.zeros(6))
        data = {"energies": np.full(k + 1, -3.0)} if k != 1 else {}
        db.write(atoms, name=f"f{k}", split="train", data=data)
    records = read_ase_db(path, targets=["energy", "forces", "stress"])
    assert all("energies" not in r.targets for r in records)
    records = read_ase_db(path, targets=["energy", "forces", "stress"], optional=["energies"])
    assert [r.targets.get("energies") is not None for r in records] == [True, False, True]
    np.testing.assert_allclose(records[2].targets["energies"], [-3.0] * 3)


def test_write_rows_stores_the_teachers_site_energies(tmp_path):
    M = importlib.import_module("make_dataset")
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    lab = {"energy": -7.0, "forces": np.zeros((2, 3)), "stress": np.zeros(6), "magmoms": np.zeros(2)}
    db = connect(str(tmp_path / "frames.db"))
    M.write_rows(db, [{"atoms": atoms.copy(), "labels": {**lab, "energies": np.array([-3.4, -3.6])}, "kvp": {"frame": 0}},
                      {"atoms": atoms.copy(), "labels": lab, "kvp": {"frame": 1}}])  # e.g. the slow path: none
    with_sites, without = connect(str(tmp_path / "frames.db")).select()
    np.testing.assert_allclose(with_sites.data["energies"], [-3.4, -3.6])
    assert "energies" not in without.data

"""Fast tests of benchmarks/potential_data/add_relax_frames.py: which parents it
takes (training split only, --max-parents counted before --resume), and the
start-end midpoint across the periodic boundary, supercell starts, and the teacher's own
path (EMT as the teacher). No CHGNet, no ../shared."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.db import connect

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "potential_data"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

A = importlib.import_module("add_relax_frames")


def _db(tmp_path):
    path = tmp_path / "frames.db"
    db = connect(path)
    for k in range(6):
        split = "test" if k == 0 else ("val" if k == 1 else "train")
        db.write(bulk("Cu", "fcc", a=3.6 + 0.01 * k), parent_id=f"perov5:{k}", source="perov5", kind="parent", split=split)
        db.write(bulk("Cu", "fcc", a=3.7), parent_id=f"perov5:{k}", source="perov5", kind="rattle", split=split)
    return path


def test_only_training_parents_and_resume_counts_the_done_ones(tmp_path):
    path = _db(tmp_path)
    todo = A.parents_to_do(path, ["perov5"], resume=True, max_parents=None)
    assert sorted(t[0] for t in todo) == [f"perov5:{k}" for k in range(2, 6)]
    first_two = A.parents_to_do(path, ["perov5"], resume=True, max_parents=2)
    assert len(first_two) == 2
    connect(path).write(first_two[0][2], parent_id=first_two[0][0], source="perov5", kind="student_relaxed", split="train")
    again = A.parents_to_do(path, ["perov5"], resume=True, max_parents=2)
    assert [t[0] for t in again] == [first_two[1][0]]  # the same two parents, one of them done
    assert len(A.parents_to_do(path, ["perov5"], resume=False, max_parents=2)) == 2
    assert len(A.parents_to_do(path, ["perov5"], resume=True, max_parents=2, round_=2)) == 2  # a new round


def test_midpoint_goes_the_short_way_across_the_boundary():
    a = bulk("Cu", "sc", a=4.0)
    a.set_scaled_positions([[0.95, 0.5, 0.5]])
    b = a.copy()
    b.set_cell(a.cell.array * 1.1, scale_atoms=False)
    b.set_scaled_positions([[0.05, 0.5, 0.5]])
    mid = A.midpoint(a, b)
    assert np.allclose(mid.cell.array, a.cell.array * 1.05)
    assert np.isclose(mid.get_scaled_positions(wrap=False)[0, 0], 1.0)  # 0.95 -> 1.05, not 0.95 -> 0.05


def test_rattle_is_seeded_per_parent():
    atoms = bulk("NaCl", "rocksalt", a=5.6)
    one, two = A.rattled(atoms, "perov5:1", 0), A.rattled(atoms, "perov5:1", 0)
    other = A.rattled(atoms, "perov5:2", 0)
    assert np.array_equal(one.positions, two.positions)
    assert not np.array_equal(one.positions, other.positions)
    assert 0.02 < np.abs(one.positions - atoms.positions).max() < 0.6


def test_active_learning_starts_and_their_resume_key(tmp_path):
    """Seeded rattles of the parent or of its supercell, and --resume
    counts a parent done per round and supercell size."""
    parent = Atoms(
        "SrTiO3", scaled_positions=[[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=np.eye(3) * 3.9, pbc=True)
    one = A.rattled(parent, "perov5:1", seed=0)
    assert len(one) == 5 and np.allclose(one.positions, A.rattled(parent, "perov5:1", seed=0).positions)
    shift = one.positions - parent.positions
    assert 0.02 < np.abs(shift).mean() < 0.3 and not np.allclose(one.cell.array, 0)
    big = A.rattled(parent, "perov5:1", seed=0, repeat=2)
    assert len(big) == 40 and np.allclose(big.cell.array, 2 * parent.cell.array)
    assert np.allclose(big.positions, A.rattled(parent, "perov5:1", seed=0, repeat=2).positions)

    db = connect(tmp_path / "frames.db")
    for pid in ("perov5:1", "perov5:2"):
        db.write(parent, kind="parent", split="train", source="perov5", parent_id=pid)
    db.write(parent, kind="student_relaxed", split="train", source="perov5", parent_id="perov5:1",
             al_round=5, repeat=2)
    todo = lambda **kw: sorted(p for p, _, _ in A.parents_to_do(tmp_path / "frames.db", ["perov5"], True, None, **kw))  # noqa: E731
    assert todo(round_=5, repeat=2) == ["perov5:2"]
    assert todo(round_=5, repeat=1) == ["perov5:1", "perov5:2"]
    assert todo(round_=4, repeat=2) == ["perov5:1", "perov5:2"]


def test_teacher_path_keeps_the_teachers_own_labels():
    """--relaxer teacher: FIRE + FrechetCellFilter with the teacher (EMT here); the
    kept frames carry the calculator's results at exactly their geometry."""
    from ase.calculators.emt import EMT

    start = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 2))
    start.rattle(0.1, seed=3)
    frames, converged, steps = A.teacher_path(start, EMT(), fmax=0.05, steps=200, keep=3)
    assert converged and steps > 3
    kinds = [k for k, _, _ in frames]
    assert kinds == ["teacher_path"] * 3 + ["teacher_relaxed"]
    for _, atoms, lab in frames:
        ref = atoms.copy()
        ref.calc = EMT()
        assert np.isclose(lab["energy"], ref.get_potential_energy())
        assert np.allclose(lab["forces"], ref.get_forces(), atol=1e-10)
        assert np.allclose(lab["stress"], ref.get_stress(), atol=1e-10)
    assert np.linalg.norm(frames[-1][2]["forces"], axis=1).max() < 0.05
    assert not np.allclose(frames[0][1].positions, start.positions)  # the start itself is not kept
    few, _, _ = A.teacher_path(start, EMT(), fmax=0.05, steps=200, keep=0)
    assert [k for k, _, _ in few] == ["teacher_relaxed"]

"""Fast tests of benchmarks/potential_data/add_relax_frames.py: which parents it
takes (training split only, --max-parents counted before --resume), and the
start-end midpoint across the periodic boundary. No teacher, no ../shared."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
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

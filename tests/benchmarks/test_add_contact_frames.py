"""Fast tests of benchmarks/potential_data/add_contact_frames.py: the pushed pair ends
at the drawn fraction of its covalent bond length, frames are seeded per parent,
one-atom cells are repeated first, and only training parents without contact frames
are taken. No CHGNet, no ../shared."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.data import covalent_radii
from ase.db import connect
from ase.neighborlist import neighbor_list

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "potential_data"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

C = importlib.import_module("add_contact_frames")


def _shortest_over_bond(atoms) -> float:
    i, j, d = neighbor_list("ijd", atoms, 5.0)
    keep = i != j
    bond = covalent_radii[atoms.numbers[i[keep]]] + covalent_radii[atoms.numbers[j[keep]]]
    return float((d[keep] / bond).min())


def test_one_pair_is_pushed_to_the_drawn_ratio():
    parent = bulk("NaCl", "rocksalt", a=5.6)
    for k in range(5):
        frame, info = C.contact_frame(parent, "prototype:NaCl-rocksalt", 0, k, (0.45, 0.8), 0.0)
        assert len(frame) >= 4 and 0.45 <= info["contact_ratio"] <= 0.8
        assert np.isclose(_shortest_over_bond(frame), info["contact_ratio"])
        assert info["contact_pair"] in {"Na-Cl", "Cl-Na"}
        d = frame.get_all_distances(mic=True)
        assert (d[np.triu_indices(len(frame), 1)] < 2.5).sum() == 1  # only that pair moved in (NN: 2.8 Å)


def test_seeded_per_parent_and_index_and_one_atom_cells_repeated():
    si = bulk("Cu", "fcc", a=3.6)  # one atom: its nearest neighbour is its own image
    one, _ = C.contact_frame(si, "element:Cu-fcc", 0, 0, (0.45, 0.8), 0.05)
    again, _ = C.contact_frame(si, "element:Cu-fcc", 0, 0, (0.45, 0.8), 0.05)
    other, _ = C.contact_frame(si, "element:Cu-fcc", 0, 1, (0.45, 0.8), 0.05)
    assert len(one) == 4 and np.array_equal(one.positions, again.positions)
    assert not np.allclose(one.positions, other.positions)
    assert _shortest_over_bond(one) < 0.81


def test_only_training_parents_without_contact_frames(tmp_path):
    path = tmp_path / "frames.db"
    db = connect(path)
    for k, split in enumerate(("train", "test", "train")):
        db.write(bulk("Cu", "fcc", a=3.6), parent_id=f"element:{k}", source="element", kind="parent", split=split)
    todo = C.parents_to_do(path, ["element"], resume=True, max_parents=None)
    assert sorted(t[0] for t in todo) == ["element:0", "element:2"]
    db.write(bulk("Cu", "fcc", a=3.6), parent_id="element:0", source="element", kind="contact", split="train")
    assert [t[0] for t in C.parents_to_do(path, ["element"], resume=True, max_parents=None)] == ["element:2"]
    assert len(C.parents_to_do(path, ["element"], resume=False, max_parents=None)) == 2


def test_shard_parsing_shared_by_the_frame_scripts():
    M = importlib.import_module("make_dataset")
    assert M.parse_shard("1/2") == (1, 2) and M.parse_shard("0/1") == (0, 1)
    for bad in ("2/2", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard must be i/n"):
            M.parse_shard(bad)

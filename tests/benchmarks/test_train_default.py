"""Fast test of benchmarks/potential_data/train_default.py's per-source oversampling."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect

from crystalgnn_plugins.data import read_ase_db

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "potential_data"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

T = importlib.import_module("train_default")


def _db(tmp_path) -> str:
    path = str(tmp_path / "frames.db")
    db = connect(path)
    for k, (source, split) in enumerate([("perov5", "train"), ("element", "train"), ("element", "test"), ("prototype", "train")]):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.01 * k)
        atoms.calc = SinglePointCalculator(atoms, energy=-3.0 - k)
        db.write(atoms, name=f"f{k}", source=source, split=split)
    return path


def test_oversample_repeats_the_frames_of_a_source(tmp_path):
    path = _db(tmp_path)
    train = read_ase_db(path, selection="split=train", targets=["energy"])
    out = T._oversample(train, path, {"element": 3})
    assert [r.id for r in out] == ["f0", "f1", "f1", "f1", "f3"]  # the element test frame stays out
    assert T._oversample(train, path, {}) is train


def test_oversample_names_an_unknown_source(tmp_path):
    path = _db(tmp_path)
    train = read_ase_db(path, selection="split=train", targets=["energy"])
    with pytest.raises(SystemExit, match="elements"):
        T._oversample(train, path, {"elements": 2})


def test_excluded_sources_leave_the_training_split_only(tmp_path):
    path = _db(tmp_path)
    sel = T._selections(["element"])
    train = read_ase_db(path, selection=sel["train"], targets=["energy"])
    test = read_ase_db(path, selection=sel["test"], targets=["energy"])
    assert [r.id for r in train] == ["f0", "f3"]
    assert [r.id for r in test] == ["f2"]  # an element frame, kept in the test split
    assert T._selections() == {"train": "split=train", "val": "split=val", "test": "split=test"}

"""Every bad record raises DataError naming the file, the row / id and the problem."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from crystalgnn_plugins.data import (
    DataError,
    read_ase_db,
    read_cdvae_csv,
    read_cif_folder,
    read_extxyz,
)


def _write_csv(path, header, rows):
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def good_rows(labelled, writers):
    return [[it.id, writers.cif_string(it.atoms), repr(it.energy)] for it in labelled]


def _message(exc_info) -> str:
    assert isinstance(exc_info.value, ValueError)  # DataError is a ValueError
    return str(exc_info.value)


# ------------------------------------------------------------------ CDVAE CSV
def test_missing_target_column_lists_columns(datasets):
    path = datasets["cdvae-csv"]
    with pytest.raises(DataError) as err:
        read_cdvae_csv(path, targets=["energy", "heat_all"])
    msg = _message(err)
    assert str(path) in msg and "heat_all" in msg and "not found" in msg
    for col in ("material_id", "cif", "formula", "energy", "gap"):
        assert col in msg


def test_missing_cif_column(tmp_path):
    path = _write_csv(tmp_path / "nocif.csv", ["material_id", "structure", "e"], [["a", "x", "1"]])
    with pytest.raises(DataError, match=r"no 'cif' column.*structure") as err:
        read_cdvae_csv(path)
    assert str(path) in _message(err)


def test_bad_cif_names_row_and_id(tmp_path, good_rows):
    good_rows[2][1] = "data_broken\n_cell_length_a 3.0\nthis is not a CIF\n"
    path = _write_csv(tmp_path / "bad.csv", ["material_id", "cif", "energy"], good_rows)
    with pytest.raises(DataError) as err:
        read_cdvae_csv(path)
    msg = _message(err)
    assert f"{path}:row 2" in msg and "'alni-b2'" in msg and "CIF" in msg


def test_empty_cif(tmp_path, good_rows):
    good_rows[1][1] = "  "
    path = _write_csv(tmp_path / "empty.csv", ["material_id", "cif", "energy"], good_rows)
    with pytest.raises(DataError, match=r"row 1 \(id 'cu3au'\): empty CIF"):
        read_cdvae_csv(path)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("nan", "nan (not finite)"),
        ("inf", "inf (not finite)"),
        ("abc", "not a number: 'abc'"),
        ("", "not a number: an empty value"),
    ],
)
def test_bad_target_value_names_row_id_and_column(tmp_path, good_rows, value, problem):
    good_rows[3][2] = value
    path = _write_csv(tmp_path / "nan.csv", ["material_id", "cif", "energy"], good_rows)
    with pytest.raises(DataError) as err:
        read_cdvae_csv(path, targets=["energy"])
    msg = _message(err)
    assert f"{path}:row 3" in msg and "'ni-2x1'" in msg and "'energy'" in msg and problem in msg


def test_non_numeric_column_is_not_a_default_target_but_fails_when_requested(tmp_path, good_rows):
    path = _write_csv(
        tmp_path / "f.csv",
        ["material_id", "cif", "energy", "note"],
        [r + ["ok"] for r in good_rows],
    )
    assert list(read_cdvae_csv(path)[0].targets) == ["energy"]
    with pytest.raises(
        DataError, match=r"row 0 \(id 'cu-fcc'\): target 'note' is not a number: 'ok'"
    ):
        read_cdvae_csv(path, targets="note")


def test_duplicate_ids_and_ragged_rows(tmp_path, good_rows):
    good_rows[3][0] = good_rows[0][0]
    path = _write_csv(tmp_path / "dup.csv", ["material_id", "cif", "energy"], good_rows)
    with pytest.raises(DataError, match=r"duplicate id 'cu-fcc'.*row 0.*row 3"):
        read_cdvae_csv(path)
    good_rows[1].append("extra")
    path = _write_csv(tmp_path / "ragged.csv", ["material_id", "cif", "energy"], good_rows)
    with pytest.raises(DataError, match=r"ragged.csv:row 1: 4 fields, expected 3"):
        read_cdvae_csv(path)


def test_disordered_structure_is_rejected(tmp_path, writers, labelled):
    cif = (
        writers.cif_string(labelled[0].atoms)
        .replace("Cu0  1", "Cu0  0.5")
        .replace("0.01000000  1\n", "0.01000000  0.5\n")
    )
    lines = cif.splitlines()
    lines[-1] = lines[-1].rsplit(" ", 1)[0] + " 0.5"  # last site half occupied
    path = _write_csv(
        tmp_path / "dis.csv", ["material_id", "cif"], [["d", "\n".join(lines) + "\n"]]
    )
    with pytest.raises(DataError, match=r"row 0 \(id 'd'\): .*disordered"):
        read_cdvae_csv(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_cdvae_csv(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError):
        read_cif_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        read_ase_db(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()  # not created by ase.db.connect
    with pytest.raises(FileNotFoundError):
        read_extxyz(tmp_path / "nope.xyz")


# ------------------------------------------------------------------ CIF folder
def test_missing_cif_file_is_named(datasets, tmp_path):
    folder = tmp_path / "cgcnn"
    folder.mkdir()
    for f in datasets["cif-folder"].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "alni-b2.cif").unlink()
    with pytest.raises(DataError) as err:
        read_cif_folder(folder)
    msg = _message(err)
    assert str(folder / "alni-b2.cif") in msg and "not found" in msg
    assert f"{folder / 'id_prop.csv'}:row 2" in msg and "'alni-b2'" in msg


def test_cif_folder_row_problems(datasets, tmp_path):
    folder = tmp_path / "cgcnn"
    folder.mkdir()
    for f in datasets["cif-folder"].glob("*.cif"):
        (folder / f.name).write_bytes(f.read_bytes())
    id_prop = folder / "id_prop.csv"

    id_prop.write_text("cu-fcc,1.0\ncu3au,NaN\n")
    with pytest.raises(
        DataError, match=r"id_prop.csv:row 1 \(id 'cu3au'\): target 'target' is nan"
    ):
        read_cif_folder(folder)

    id_prop.write_text("cu-fcc,1.0,2.0\ncu3au,1.0\n")
    with pytest.raises(
        DataError, match=r"id_prop.csv:row 1 \(id 'cu3au'\): 1 value\(s\), expected 2"
    ):
        read_cif_folder(folder)

    id_prop.write_text("cu-fcc,1.0,2.0\n")
    with pytest.raises(DataError, match=r"2 value column\(s\) per row but 1 target name"):
        read_cif_folder(folder, targets=["energy"])

    id_prop.write_text("cu-fcc,1.0\n")
    (folder / "cu-fcc.cif").write_text("not a cif at all\n")
    with pytest.raises(
        DataError, match=r"cu-fcc.cif \(id_prop.csv row 0\) \(id 'cu-fcc'\): unparsable CIF"
    ):
        read_cif_folder(folder)

    id_prop.unlink()
    with pytest.raises(DataError, match="no id_prop.csv"):
        read_cif_folder(folder)


# ------------------------------------------------------------------ ASE db
def test_ase_db_missing_target_names_row(datasets):
    path = datasets["ase-db"]
    with pytest.raises(DataError) as err:
        read_ase_db(path, targets=["energy", "band_gap"])
    msg = _message(err)
    assert f"{path}:id 1" in msg and "'cu-fcc'" in msg and "band_gap" in msg and "gap" in msg
    with pytest.raises(DataError, match=r"\['origin'\] not found \(not numeric"):
        read_ase_db(path, targets=["origin"])


def test_ase_db_non_finite_key_value_pair(labelled, tmp_path, writers):
    import ase.db

    path = tmp_path / "nan.db"
    with ase.db.connect(str(path)) as db:
        db.write(writers.with_results(labelled[0]), name="bad", gap=float("nan"))
    with pytest.raises(DataError, match=r"nan.db:id 1 \(id 'bad'\): target 'gap' is nan"):
        read_ase_db(path)
    (rec,) = read_ase_db(path, targets=["energy", "forces"])  # only requested targets are checked
    assert list(rec.targets) == ["energy", "forces"]


def test_ase_db_not_a_database(tmp_path):
    path = tmp_path / "junk.db"
    path.write_text("definitely not sqlite")
    with pytest.raises(DataError, match=r"junk.db: cannot read ASE database"):
        read_ase_db(path)


# ------------------------------------------------------------------ extxyz
def test_extxyz_problems(datasets, tmp_path):
    path = datasets["extxyz"]
    with pytest.raises(
        DataError, match=r"frame 0 \(id 'cu-fcc'\): target\(s\) \['free_energy'\] not found"
    ):
        read_extxyz(path, targets=["energy", "free_energy"])
    with pytest.raises(DataError, match="frame 7 out of range"):
        read_extxyz(path, index=7)
    with pytest.raises(ValueError, match="invalid frame index"):
        read_extxyz(path, index="a:b")

    broken = tmp_path / "broken.xyz"
    broken.write_text('3\nLattice="1 0 0" pbc="T T T"\nCu 0 0 0\n')
    with pytest.raises(DataError, match=r"broken.xyz: cannot read extended XYZ"):
        read_extxyz(broken)


def test_extxyz_bad_forces_shape_is_reported(labelled, tmp_path):
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = labelled[0].atoms.copy()
    atoms.calc = SinglePointCalculator(atoms, energy=1.0, forces=np.full((len(atoms), 3), np.inf))
    path = tmp_path / "inf.xyz"
    ase.io.write(str(path), atoms, format="extxyz")
    with pytest.raises(
        DataError, match=r"inf.xyz:frame 0 \(id '0'\): forces contain NaN or infinite"
    ):
        read_extxyz(path)

"""All readers give the same records for the same structures."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from crystalgnn_plugins.data import (
    DataError,
    Record,
    infer_format,
    read_ase_db,
    read_cdvae_csv,
    read_cif_folder,
    read_extxyz,
    read_records,
)

TOL = 1e-8
FORMATS = ("cdvae-csv", "cif-folder", "ase-db", "extxyz")


def _assert_same_structure(rec: Record, ref) -> None:
    assert rec.id == ref.id
    np.testing.assert_array_equal(rec.atoms.numbers, ref.atoms.numbers)
    np.testing.assert_allclose(rec.atoms.cell[:], ref.atoms.cell[:], rtol=0, atol=TOL)
    np.testing.assert_allclose(rec.atoms.positions, ref.atoms.positions, rtol=0, atol=TOL)
    assert rec.atoms.pbc.all()
    assert rec.atoms.calc is None


def _read(fmt: str, path):
    options = {"targets": ["energy", "gap"]} if fmt == "cif-folder" else {}
    return read_records(path, **options)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reproduces_the_structures_and_labels(fmt, datasets, labelled):
    records = _read(fmt, datasets[fmt])
    assert [r.id for r in records] == [it.id for it in labelled]
    for rec, ref in zip(records, labelled, strict=True):
        _assert_same_structure(rec, ref)
        assert isinstance(rec.targets["energy"], float)
        assert rec.targets["energy"] == pytest.approx(ref.energy, abs=TOL)
        assert rec.targets["gap"] == pytest.approx(ref.gap, abs=TOL)
        assert rec.source.startswith(str(datasets[fmt]))
        if fmt in ("ase-db", "extxyz"):
            assert set(rec.targets) == {"energy", "forces", "stress", "gap"}
            forces, stress = rec.targets["forces"], rec.targets["stress"]
            assert forces.dtype == np.float64 and forces.shape == (len(ref.atoms), 3)
            assert stress.dtype == np.float64 and stress.shape == (6,)
            np.testing.assert_allclose(forces, ref.forces, rtol=0, atol=TOL)
            np.testing.assert_allclose(stress, ref.stress, rtol=0, atol=TOL)
        else:
            assert list(rec.targets) == ["energy", "gap"]


def test_all_formats_agree_with_each_other(datasets):
    by_format = {fmt: _read(fmt, path) for fmt, path in datasets.items()}
    first = by_format["cdvae-csv"]
    for fmt, records in by_format.items():
        assert len(records) == len(first), fmt
        for a, b in zip(first, records, strict=True):
            _assert_same_structure(b, a)
            for key in ("energy", "gap"):
                assert b.targets[key] == pytest.approx(a.targets[key], abs=TOL)
    for a, b in zip(by_format["ase-db"], by_format["extxyz"], strict=True):
        for key in ("forces", "stress"):
            np.testing.assert_allclose(a.targets[key], b.targets[key], rtol=0, atol=TOL)


def test_readers_are_registered_with_descriptions():
    from crystalgnn_plugins.plugins import get_registry

    registry = get_registry("readers")
    expected = {
        "cdvae-csv": read_cdvae_csv,
        "cif-folder": read_cif_folder,
        "ase-db": read_ase_db,
        "extxyz": read_extxyz,
    }
    for name, func in expected.items():
        assert registry.get(name) is func
        assert registry.entry(name).description


def test_infer_format(datasets, tmp_path):
    for fmt, path in datasets.items():
        assert infer_format(path) == fmt
    other = tmp_path / "data.xyz"
    other.write_text("")
    assert infer_format(other) == "extxyz"


def test_read_records_unknown_suffix_lists_formats(tmp_path):
    path = tmp_path / "structures.pdb"
    path.write_text("")
    with pytest.raises(DataError) as err:
        read_records(path)
    msg = str(err.value)
    assert str(path) in msg and ".pdb" in msg
    for fmt in FORMATS:
        assert fmt in msg

    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="id_prop.csv"):
        read_records(tmp_path / "folder")
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "missing.csv")


def test_read_records_unknown_format_lists_registered_names(datasets):
    with pytest.raises(KeyError) as err:
        read_records(datasets["extxyz"], format="xyz-ish")
    for fmt in FORMATS:
        assert fmt in str(err.value)


def test_read_records_passes_options(datasets):
    records = read_records(datasets["cdvae-csv"], format="cdvae-csv", targets="gap")
    assert [list(r.targets) for r in records] == [["gap"]] * len(records)
    records = read_records(datasets["extxyz"], index="1:3", targets=["energy"])
    assert [r.id for r in records] == ["cu3au", "alni-b2"]


# ------------------------------------------------------------------ CDVAE CSV
def _rewrite_csv(src, dst, drop=(), rename=None):
    with src.open(newline="") as fh:
        rows = list(csv.reader(fh))
    keep = [i for i, name in enumerate(rows[0]) if name not in drop]
    header = [(rename or {}).get(rows[0][i], rows[0][i]) for i in keep]
    with dst.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([[row[i] for i in keep] for row in rows[1:]])
    return dst


def test_cdvae_csv_ids_fall_back_to_index_column_then_row_number(datasets, tmp_path):
    src = datasets["cdvae-csv"]
    by_index = read_cdvae_csv(_rewrite_csv(src, tmp_path / "a.csv", drop=["material_id"]))
    assert [r.id for r in by_index] == ["10", "11", "12", "13"]
    assert list(by_index[0].targets) == ["energy", "gap"]  # the index column is not a target
    by_row = read_cdvae_csv(_rewrite_csv(src, tmp_path / "b.csv", drop=["material_id", ""]))
    assert [r.id for r in by_row] == ["0", "1", "2", "3"]
    assert by_row[2].source == f"{tmp_path / 'b.csv'}:row 2"
    custom = read_cdvae_csv(src, id_column="formula", targets=["gap"])
    assert custom[0].id == "Cu4"


def test_cdvae_csv_target_selection_keeps_order(datasets):
    records = read_cdvae_csv(datasets["cdvae-csv"], targets=["gap", "energy"])
    assert list(records[0].targets) == ["gap", "energy"]
    assert all(isinstance(v, float) for r in records for v in r.targets.values())


def test_cdvae_csv_sites_follow_pymatgen_order(tmp_path):
    """CIF readers return sites as pymatgen orders them (by electronegativity)."""
    from ase import Atoms

    atoms = Atoms(
        "AuCu3",
        scaled_positions=[[0.1, 0.1, 0.1], [0.1, 0.6, 0.6], [0.6, 0.1, 0.6], [0.6, 0.6, 0.1]],
        cell=[3.7] * 3,
        pbc=True,
    )
    from pymatgen.io.ase import AseAtomsAdaptor

    path = tmp_path / "x.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(
            [["material_id", "cif"], ["m", AseAtomsAdaptor.get_structure(atoms).to(fmt="cif")]]
        )
    (rec,) = read_cdvae_csv(path)
    assert rec.atoms.get_chemical_symbols() == ["Cu", "Cu", "Cu", "Au"]
    assert rec.targets == {}


def test_triclinic_cell_keeps_cell_parameters_and_fractional_coordinates(tmp_path, writers):
    """pymatgen re-orients a general cell; lengths, angles and fractional coordinates survive."""
    from ase import Atoms

    frac = np.array([[0.11, 0.12, 0.13], [0.61, 0.42, 0.57]])
    atoms = Atoms(
        "CuAu", scaled_positions=frac, cell=[[3.1, 0, 0], [0.7, 3.3, 0], [0.4, -0.6, 3.5]], pbc=True
    )
    path = tmp_path / "tri.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([["material_id", "cif"], ["tri", writers.cif_string(atoms)]])
    folder = tmp_path / "tri"
    folder.mkdir()
    (folder / "id_prop.csv").write_text("tri,1.5\n")
    (folder / "tri.cif").write_text(writers.cif_string(atoms))
    (a,) = read_cdvae_csv(path)
    (b,) = read_cif_folder(folder)
    assert b.targets == {"target": 1.5}
    for rec in (a, b):
        np.testing.assert_allclose(rec.atoms.cell.cellpar(), atoms.cell.cellpar(), atol=1e-6)
        np.testing.assert_allclose(rec.atoms.get_scaled_positions(), frac, atol=1e-7)
        assert rec.atoms.get_volume() == pytest.approx(atoms.get_volume(), rel=1e-7)
    np.testing.assert_array_equal(a.atoms.positions, b.atoms.positions)


# ------------------------------------------------------------------ CIF folder
def test_cif_folder_default_target_names(datasets, tmp_path):
    records = read_cif_folder(datasets["cif-folder"])
    assert list(records[0].targets) == ["target_0", "target_1"]
    # the id_prop.csv path itself is accepted too
    same = read_cif_folder(datasets["cif-folder"] / "id_prop.csv", targets=("e", "g"))
    assert [r.targets["e"] for r in same] == [r.targets["target_0"] for r in records]


# ------------------------------------------------------------------ ASE db
def test_ase_db_selection_targets_and_row_ids(datasets, labelled, tmp_path):
    path = datasets["ase-db"]
    only_cu = read_ase_db(path, selection="Au=0,Cu>0")
    assert [r.id for r in only_cu] == ["cu-fcc"]
    just_energy = read_ase_db(path, targets="energy")
    assert [list(r.targets) for r in just_energy] == [["energy"]] * len(labelled)
    by_row_id = read_ase_db(path, id_keys=())
    assert [r.id for r in by_row_id] == ["1", "2", "3", "4"]
    assert "name" not in by_row_id[0].targets  # strings, bools are not targets
    assert "relaxed" not in by_row_id[0].targets and "origin" not in by_row_id[0].targets


def test_ase_db_full_stress_tensor_is_converted_to_voigt(labelled, tmp_path):
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import voigt_6_to_full_3x3_stress

    item = labelled[0]
    atoms = item.atoms.copy()
    atoms.calc = SinglePointCalculator(
        atoms, energy=item.energy, stress=voigt_6_to_full_3x3_stress(item.stress)
    )
    path = tmp_path / "full.db"
    with ase.db.connect(str(path)) as db:
        db.write(atoms)
    (rec,) = read_ase_db(path)
    assert set(rec.targets) == {"energy", "stress"}
    np.testing.assert_allclose(rec.targets["stress"], item.stress, rtol=0, atol=1e-12)


def test_ase_db_unlabelled_rows_have_no_targets(labelled, tmp_path):
    import ase.db

    path = tmp_path / "plain.db"
    with ase.db.connect(str(path)) as db:
        db.write(labelled[0].atoms)
    (rec,) = read_ase_db(path)
    assert rec.targets == {} and rec.id == "1"


# ------------------------------------------------------------------ extxyz
def test_extxyz_index_and_info(datasets, labelled):
    path = datasets["extxyz"]
    last = read_extxyz(path, index=-1)
    assert [r.id for r in last] == [labelled[-1].id]
    assert last[0].source == f"{path}:frame {len(labelled) - 1}"
    assert last[0].atoms.info["config_type"] == "bulk"  # info is kept, strings are not targets
    every_other = read_extxyz(path, index="::2", id_keys=())
    assert [r.id for r in every_other] == ["0", "2"]


def test_extxyz_virial_becomes_stress(labelled, tmp_path):
    import ase.io

    item = labelled[1]
    atoms = item.atoms.copy()
    volume = atoms.get_volume()
    from ase.stress import voigt_6_to_full_3x3_stress

    virial = -voigt_6_to_full_3x3_stress(item.stress) * volume

    def fmt(values):
        return " ".join(repr(float(v)) for v in np.ravel(values))

    text = textwrap.dedent(
        f"""\
        {len(atoms)}
        Lattice="{fmt(atoms.cell[:])}" Properties=species:S:1:pos:R:3 virial="{fmt(virial)}" REF_energy={item.energy!r} pbc="T T T"
        """
    ) + "".join(
        f"{s} {fmt(p)}\n"
        for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
    )
    path = tmp_path / "virial.xyz"
    path.write_text(text)
    assert ase.io.read(str(path)).info["virial"].shape == (3, 3)
    (rec,) = read_extxyz(path)
    assert set(rec.targets) == {"stress", "REF_energy"}
    np.testing.assert_allclose(rec.targets["stress"], item.stress, rtol=0, atol=1e-12)
    assert rec.targets["REF_energy"] == item.energy


def test_plain_xyz_molecule_without_labels(tmp_path):
    path = tmp_path / "water.xyz"
    path.write_text("3\n\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    (rec,) = read_records(path)
    assert rec.id == "0" and rec.targets == {} and not rec.atoms.pbc.any()
    assert rec.atoms.get_chemical_formula() == "H2O"


# ------------------------------------------------------------------ package
def test_importing_the_data_package_is_light():
    code = (
        "import sys, crystalgnn_plugins.data, crystalgnn_plugins.builtins.readers\n"
        "heavy = [m for m in ('torch', 'pymatgen', 'pandas', 'ase') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    import crystalgnn_plugins

    root = Path(crystalgnn_plugins.__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)

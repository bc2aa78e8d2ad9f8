"""``RelaxTransformation`` (pymatgen) and ``crystalgnn relax`` (CLI)."""

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write
from pymatgen.io.ase import AseAtomsAdaptor

from crystalgnn_plugins.cli.main import main
from crystalgnn_plugins.models import save_model
from crystalgnn_plugins.relaxation import RelaxTransformation, relax


# ------------------------------------------------------------ transformation
def test_transformation_relaxes_a_structure(morse_model, cu_cells):
    structure = AseAtomsAdaptor.get_structure(cu_cells[1])
    before = structure.as_dict()
    t = RelaxTransformation(morse_model, fmax=0.05)
    assert t.is_one_to_many is False and t.inverse is None
    out = t.apply_transformation(structure)
    assert structure.as_dict() == before  # input untouched
    assert type(out) is type(structure) and out is not structure
    props = out.properties
    assert props["relaxation"]["converged"] and props["relaxation"]["residual"] < 0.05
    ref = relax(structure, morse_model, fmax=0.05, batched=True)[0]
    assert props["energy"] == pytest.approx(ref.energy) and props["energy_per_atom"] == pytest.approx(ref.energy / 4)
    assert out.lattice.volume == pytest.approx(ref.structure.lattice.volume)
    json.dumps(props)  # plain JSON values
    # an in-memory model is described but cannot be restored
    d = t.as_dict()
    assert d["model_in_memory"] and "MorseModel" in d["model"]
    with pytest.raises(ValueError, match="in-memory model"):
        RelaxTransformation.from_dict(d)


def test_transformation_round_trips_with_a_saved_model(gnn_model, cu_cells, tmp_path):
    from pymatgen.alchemy.materials import TransformedStructure

    save_model(gnn_model, tmp_path / "m")
    t = RelaxTransformation(tmp_path / "m", fmax=0.01, steps=50, dtype="float64")
    d = json.loads(json.dumps(t.as_dict()))
    t2 = RelaxTransformation.from_dict(d)
    assert (t2.fmax, t2.steps, t2.dtype, t2.model) == (0.01, 50, "float64", str(tmp_path / "m"))
    structure = AseAtomsAdaptor.get_structure(cu_cells[0])
    a, b = t.apply_transformation(structure), t2.apply_transformation(structure)
    assert a.properties["relaxation"]["steps"] > 0
    assert a.properties["energy"] == pytest.approx(b.properties["energy"])
    # usable in pymatgen's transformation machinery
    ts = TransformedStructure(structure, [t2])
    assert ts.final_structure.properties["energy"] == pytest.approx(a.properties["energy"])


def test_pressure_in_the_transformation_and_the_cli(morse_model, gnn_model, cu_cells, tmp_path, capsys):
    """``pressure`` (GPa) reaches relax() from the transformation (and survives as_dict)
    and from ``crystalgnn relax --pressure``: the cells come out smaller."""
    structure = AseAtomsAdaptor.get_structure(cu_cells[1])
    t = RelaxTransformation(morse_model, fmax=0.02, pressure=5.0)
    assert RelaxTransformation.from_dict({**t.as_dict(), "model_in_memory": False, "model": None}).pressure == 5.0
    pressed = t.apply_transformation(structure)
    free = RelaxTransformation(morse_model, fmax=0.02).apply_transformation(structure)
    assert pressed.properties["relaxation"]["pressure_GPa"] == 5.0
    assert pressed.lattice.volume < 0.99 * free.lattice.volume

    save_model(gnn_model, tmp_path / "m")
    write(tmp_path / "cu.cif", cu_cells[1])
    volumes = []
    for pressure in ("0", "20"):
        out = tmp_path / f"p{pressure}.extxyz"
        assert main(["relax", str(tmp_path / "cu.cif"), "--out", str(out), "--model", str(tmp_path / "m"),
                     "--pressure", pressure, "--batched"]) == 0
        volumes.append(read(out).get_volume())
    capsys.readouterr()
    assert volumes[1] < volumes[0]


def test_transformation_rejects_a_bad_dtype():
    with pytest.raises(ValueError, match="dtype"):
        RelaxTransformation(dtype="float16")


# ------------------------------------------------------------------ CLI
@pytest.fixture
def model_dir(gnn_model, tmp_path):
    save_model(gnn_model, tmp_path / "model")
    return str(tmp_path / "model")


@pytest.fixture
def cifs(cu_cells, tmp_path):
    paths = []
    for k, atoms in enumerate(cu_cells[:3]):
        p = tmp_path / f"cu{k}.cif"
        write(p, atoms)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("batched", [False, True])
def test_cli_relaxes_cif_files_to_extxyz(model_dir, cifs, tmp_path, capsys, batched):
    out = tmp_path / "relaxed.extxyz"
    args = ["relax", *cifs, "--out", str(out), "--model", model_dir, "--fmax", "0.05"]
    assert main(args + (["--batched", "--batch-size", "2"] if batched else [])) == 0
    text = capsys.readouterr().out
    assert "3/3 converged" in text
    for name in ("cu0.cif", "cu1.cif", "cu2.cif"):
        assert name in text
    frames = read(out, index=":")
    assert [f.info["id"] for f in frames] == ["cu0.cif", "cu1.cif", "cu2.cif"]
    for f in frames:
        assert f.info["relax_converged"] and f.info["relax_residual"] < 0.05
        assert np.isfinite(f.get_potential_energy())
        assert f.get_forces().shape == (len(f), 3) and f.get_stress().shape == (6,)
        assert f.info["energy_per_atom"] == pytest.approx(f.get_potential_energy() / len(f))
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary file left


def test_cli_reports_non_convergence_and_writes_a_db(model_dir, cifs, tmp_path, capsys):
    from crystalgnn_plugins.data import read_records

    out = tmp_path / "relaxed.db"
    assert main(["relax", *cifs, "--out", str(out), "--model", model_dir, "--steps", "1", "--fmax", "0.01",
                 "--batched"]) == 0
    captured = capsys.readouterr()
    assert "0/3 converged; 3 did NOT converge to fmax=0.01 eV/Å within 1 steps" in captured.out
    assert "NO" in captured.out
    assert "did NOT converge" in captured.err
    records = read_records(out, "ase-db")
    assert [r.id for r in records] == ["cu0.cif", "cu1.cif", "cu2.cif"]
    assert {"energy", "forces", "stress", "relax_steps"} <= set(records[0].targets)


def test_cli_errors(model_dir, cifs, tmp_path, capsys):
    gold = tmp_path / "gold.cif"
    write(gold, bulk("Au", "fcc", a=4.08))
    out = tmp_path / "o.extxyz"
    assert main(["relax", cifs[0], str(gold), "--out", str(out), "--model", model_dir]) == 2
    assert "structure 1 (id 'gold.cif')" in capsys.readouterr().err and not out.exists()
    assert main(["relax", cifs[0], str(gold), "--out", str(out), "--model", model_dir, "--skip-errors"]) == 0
    text = capsys.readouterr().out
    assert "1/2 converged; 1 failed (not written)" in text and "error" in text
    assert len(read(out, index=":")) == 1
    assert main(["relax", cifs[0], "--out", str(tmp_path / "o.csv"), "--model", model_dir]) == 2
    assert main(["relax", str(tmp_path / "missing.cif"), "--out", str(out), "--model", model_dir]) == 2

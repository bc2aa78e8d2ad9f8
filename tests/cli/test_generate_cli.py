"""``crystalgnn generate`` end to end with the tiny generator of ``tests/conftest.py``."""

from __future__ import annotations

import json

import pytest
from ase.db import connect
from pymatgen.core import Structure

from crystalgnn_plugins.cli.main import main


def test_generate_cifs_and_summary(generator_dir, energy_model_dir, tmp_path, capsys):
    out = tmp_path / "samples"
    code = main([
        "generate", "3", "--model", str(generator_dir), "--energy-model", str(energy_model_dir),
        "--condition", "perov", "--steps", "5", "--seed", "0", "-o", str(out),
    ])
    assert code == 0
    assert f"wrote 3 structures to {out}" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 3
    cifs = sorted(p.name for p in out.glob("*.cif"))
    assert cifs == sorted(row["file"] for row in summary)
    assert not list(out.glob(".*"))  # no temporary files left behind
    for k, row in enumerate(summary):
        assert row["file"].startswith(f"{k:05d}_") and row["file"].endswith(f"_{row['formula']}.cif")
        assert row["generator"] == "crystal_flow" and row["seed"] == 0 and row["steps"] == 5
        assert row["condition"] == "perov" and row["guidance"] == ["RepulsionTerm", "EnergyTerm", "ChargeBalanceTerm"]
        assert row["energy_guide"] == str(energy_model_dir)
        s = Structure.from_file(out / row["file"])
        assert s.composition.reduced_formula == row["formula"] and len(s) == 5
        assert s.volume > 0.1

    # the same seed writes the same structures (the same model named as the guide)
    again = tmp_path / "again"
    assert main(["generate", "3", "-m", str(generator_dir), "--guidance-model", str(energy_model_dir),
                 "--condition", "perov", "--steps", "5", "--seed", "0", "-o", str(again)]) == 0
    for row in summary:
        assert (again / row["file"]).read_text() == (out / row["file"]).read_text()


def test_generate_composition_to_database(generator_dir, tmp_path, capsys):
    db_path = tmp_path / "sub" / "sto.db"
    code = main([
        "generate", "2", "-m", str(generator_dir), "--composition", "SrTiO3", "--no-physics",
        "--steps", "4", "--seed", "1", "-o", str(db_path),
    ])
    assert code == 0 and db_path.is_file()
    assert "wrote 2 structures" in capsys.readouterr().out
    with connect(db_path) as db:
        rows = list(db.select())
    assert [row.sample for row in rows] == [0, 1]
    for row in rows:
        assert row.toatoms().get_chemical_formula(mode="reduce") in ("SrTiO3", "O3SrTi")
        assert sorted(row.toatoms().get_chemical_symbols()) == ["O", "O", "O", "Sr", "Ti"]
        gen = row.data["generation"]
        assert gen["composition"] == "SrTiO3" and gen["guidance"] == [] and gen["seed"] == 1
    assert not list(db_path.parent.glob(".*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--below", "1.0"], "--below/--above/--near need --target-model"),
        (["--target-model", "x"], "--target-model needs one of --below, --above or --near"),
        (["--composition", "Li2O"], "elements ['Li'] are unknown to this generator"),
        (["--condition", "mp_20"], "unknown condition 'mp_20'"),
        (["--steps", "0"], "steps must be at least 1"),
    ],
)
def test_generate_bad_arguments(generator_dir, tmp_path, capsys, args, message):
    code = main(["generate", "2", "-m", str(generator_dir), "--no-physics", "-o", str(tmp_path / "o"), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("crystalgnn generate: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_generate_bad_n_and_missing_model(generator_dir, tmp_path, capsys):
    assert main(["generate", "0", "-m", str(generator_dir), "-o", str(tmp_path / "o")]) == 2
    assert "n must be a positive whole number of structures, got 0" in capsys.readouterr().err
    assert main(["generate", "1", "-m", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "crystalgnn generate: error:" in err and "nope" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:  # argparse: not a number
        main(["generate", "many", "-o", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_generate_relaxed_database_rows_and_summary(generator_dir, energy_model_dir, tmp_path, capsys):
    db_path = tmp_path / "gen.db"
    assert main(["generate", "2", "-m", str(generator_dir), "--energy-model", str(energy_model_dir), "--relax",
                 "--condition", "perov", "--steps", "4", "--seed", "3", "-o", str(db_path)]) == 0
    summary_path = tmp_path / "gen.summary.json"
    assert f"(summary: {summary_path})" in capsys.readouterr().out
    with connect(db_path) as db:
        rows = list(db.select())
        assert db.count(condition="perov", seed=3) == 2 and db.count(sample=1) == 1
    summary = json.loads(summary_path.read_text())
    assert [r["id"] for r in summary] == [row.id for row in rows] and [r["sample"] for r in summary] == [0, 1]
    for row, entry in zip(rows, summary):
        relaxation = row.data["generation"]["relaxation"]
        assert row.energy == pytest.approx(relaxation["energy_eV"])
        assert row.energy_per_atom == pytest.approx(relaxation["energy_eV"] / row.natoms)
        assert row.relax_converged is relaxation["converged"] and row.relax_steps == relaxation["steps"]
        assert entry["formula"] and entry["condition"] == "perov" and entry["seed"] == 3
        assert entry["relaxation"]["energy_eV"] == pytest.approx(row.energy)
    assert not list(tmp_path.glob(".*"))


def test_generate_refuses_to_mix_runs(generator_dir, tmp_path, capsys):
    def generate(n: int, out, *extra: str) -> int:
        return main(["generate", str(n), "-m", str(generator_dir), "--no-physics", "--condition", "perov",
                     "--steps", "2", "--seed", "0", "-o", str(out), *extra])

    out = tmp_path / "samples"
    assert generate(3, out) == 0
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert generate(1, out) == 2
    err = capsys.readouterr().err
    assert "the folder is not empty; pass --overwrite" in err and len(list(out.glob("*.cif"))) == 3
    assert generate(1, out, "--overwrite") == 0
    assert len(list(out.glob("*.cif"))) == 1 and len(json.loads((out / "summary.json").read_text())) == 1
    assert (out / "notes.txt").read_text() == "mine"  # not written by generate: kept

    db_path = tmp_path / "s.db"
    assert generate(2, db_path) == 0
    capsys.readouterr()
    assert generate(1, db_path) == 2
    assert "s.db exists; pass --overwrite" in capsys.readouterr().err
    assert generate(1, db_path, "--overwrite") == 0
    with connect(db_path) as db:
        assert db.count() == 1
    assert len(json.loads((tmp_path / "s.summary.json").read_text())) == 1
    (tmp_path / "file").write_text("x")
    assert generate(1, tmp_path / "file") == 2
    assert "a file, not a folder" in capsys.readouterr().err

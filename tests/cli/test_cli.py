"""``crystalgnn train`` and ``crystalgnn predict`` end to end on tiny data."""

import csv
import io
import json

from ase.io import write

from crystalgnn_plugins.cli.main import main


def test_train_then_predict_energy_model(emt_data, tmp_path, capsys, caplog):
    frames = []
    for rec in emt_data[0][:40]:
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = rec.atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=rec.targets["energy"], forces=rec.targets["forces"], stress=rec.targets["stress"])
        frames.append(atoms)
    data = tmp_path / "cu.extxyz"
    write(data, frames, format="extxyz")
    out = tmp_path / "run"
    code = main([
        "train", str(data), "--energy", "--forces", "--stress", "--epochs", "2", "--batch-size", "8",
        "-E", "atom_features=8", "-E", "num_conv=1", "-E", "cutoff=4.0", "--out", str(out), "--no-progress",
    ])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert {"energy_per_atom", "forces", "stress_gpa"} <= set(report["metrics"]["test"])
    capsys.readouterr()

    structure = tmp_path / "cu.cif"
    write(structure, frames[0])
    assert main(["predict", "--model", str(out / "model"), str(structure), str(data)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 + len(frames)
    assert abs(float(rows[0]["energy_eV"]) - emt_data[0][0].targets["energy"]) < 1.0 and "stress_xx" in rows[0]

    # fine-tune the trained model on the same file: its encoder and references are kept
    tuned = tmp_path / "tuned"
    code = main([
        "train", str(data), "--energy", "--forces", "--epochs", "1", "--batch-size", "8",
        "--init-from", str(out / "model"), "--out", str(tuned), "--progress-lines", "1e-9",
    ])
    assert code == 0
    assert any("epoch 1/1 validated: val_energy" in r.getMessage() for r in caplog.records)
    settings = json.loads((tuned / "report.json").read_text())["settings"]
    assert settings["model"] == report["settings"]["model"] and settings["fit_normalisation"] is False
    capsys.readouterr()
    assert main(["train", str(data), "--target", "energy", "--init-from", str(out / "model"), "--out", str(tmp_path / "x")]) != 0
    assert "does not match --target" in capsys.readouterr().err

    # fine-tune with the core repulsion added: the saved model carries it and the network floor
    zbl = tmp_path / "zbl"
    assert main(["train", str(data), "--energy", "--epochs", "1", "--batch-size", "8", "--core-repulsion",
                 "--init-from", str(out / "model"), "--out", str(zbl), "--no-progress"]) == 0
    saved = json.loads((zbl / "report.json").read_text())["settings"]["model"]
    assert saved["core_repulsion"] is True and saved["network_floor"] is True
    capsys.readouterr()
    assert main(["train", str(data), "--target", "energy", "--core-repulsion", "--out", str(tmp_path / "y")]) != 0
    assert "--core-repulsion needs --energy" in capsys.readouterr().err
    assert main(["train", str(data), "--energy", "--progress-lines", "0", "--out", str(tmp_path / "z")]) != 0
    assert "positive number of minutes" in capsys.readouterr().err


def test_train_property_model_from_cdvae_csv(tmp_path, capsys):
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    rows = []
    for k, a in enumerate((3.5, 3.6, 3.7, 3.8, 3.9, 4.0, 4.1, 4.2, 4.3, 4.4)):
        s = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=a))
        rows.append({"material_id": f"m{k}", "cif": s.to(fmt="cif"), "volume": s.volume})
    path = tmp_path / "toy.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["material_id", "cif", "volume"])
        w.writeheader()
        w.writerows(rows)
    code = main(["train", str(path), "--target", "volume", "--epochs", "2", "--batch-size", "4",
                 "-E", "atom_features=8", "--split", "0.6", "0.2", "0.2", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0
    assert "volume" in json.loads((tmp_path / "run" / "report.json").read_text())["metrics"]["val"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "none"), "x.cif"]) == 2
    err = capsys.readouterr().err
    assert "no model" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "missing.csv"), "--target", "y", "--out", str(tmp_path / "o")]) == 2


def test_train_energy_model_on_site_energies(emt_data, tmp_path, capsys):
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for rec in emt_data[0][:16]:
        atoms = rec.atoms.copy()
        atoms.calc = EMT()
        e, f, sites = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_potential_energies()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, energies=sites)
        frames.append(atoms)
    data = tmp_path / "cu.extxyz"
    write(data, frames, format="extxyz")
    out = tmp_path / "run"
    assert main(["train", str(data), "--energy", "--forces", "--site-energies", "--site-energy-weight", "0.5",
                 "--epochs", "1", "--batch-size", "8", "-E", "atom_features=8", "-E", "num_conv=1",
                 "--ema-decay", "0.99", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["targets"] == ["energy", "forces", "energies"]
    assert report["settings"]["weights"]["energies"] == 0.5
    assert report["settings"]["ema_decay"] == 0.99
    assert "site_energies" in report["metrics"]["test"]
    capsys.readouterr()
    assert main(["train", str(data), "--target", "energy", "--site-energies", "--out", str(tmp_path / "x")]) != 0
    assert "need --energy" in capsys.readouterr().err

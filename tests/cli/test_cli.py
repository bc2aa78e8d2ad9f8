"""``crystalgnn train`` and ``crystalgnn predict`` end to end on tiny data."""

import csv
import io
import json
import types

import pytest
from ase.io import write

from crystalgnn_plugins.cli.main import main
from crystalgnn_plugins.cli.train_cmd import _check_label


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


def _toy_csv(path, n=6):
    """A CDVAE-style CSV of Cu cells with a ``volume`` column and no energies."""
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["material_id", "cif", "volume"])
        w.writeheader()
        for k in range(n):
            s = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.5 + 0.1 * k))
            w.writerow({"material_id": f"m{k}", "cif": s.to(fmt="cif"), "volume": s.volume})
    return path


def test_predict_and_relax_refuse_a_generator(generator_dir, tmp_path, capsys):
    from ase.build import bulk

    cif = tmp_path / "c.cif"
    write(cif, bulk("C", "diamond", a=3.57))
    assert main(["predict", "--model", str(generator_dir), str(cif)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crystalgnn predict: error: predict needs an energy model (a potential) or a property model")
    assert "is a crystal generator (model_type 'crystal_flow')" in err and "Traceback" not in err
    assert main(["relax", "--model", str(generator_dir), str(cif), "-o", str(tmp_path / "r.extxyz")]) == 2
    err = capsys.readouterr().err
    assert "relaxation needs an energy model" in err and "Traceback" not in err


def test_train_names_missing_energy_labels(tmp_path, capsys):
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    data = _toy_csv(tmp_path / "toy.csv")
    assert main(["train", str(data), "--energy", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "record 'm0' has no 'energy' label, which --energy needs (it has: volume; 6 of 6 records lack it)" in err
    assert str(data) in err

    frames = []
    for k in range(4):  # energies, no forces: --forces has nothing to train on
        atoms = bulk("Cu", "fcc", a=3.6 + 0.01 * k, cubic=True)
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 * k)
        frames.append(atoms)
    write(tmp_path / "cu.extxyz", frames, format="extxyz")
    assert main(["train", str(tmp_path / "cu.extxyz"), "--energy", "--forces", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "has no 'forces' label, which --forces needs (it has: energy; 4 of 4 records lack it)" in err
    # forces on some records only are fine: the others are masked in the loss
    records = [types.SimpleNamespace(targets={"energy": -1.0, "forces": f}, id=str(k), source="x")
               for k, f in enumerate([[[0.0, 0.0, 0.0]], None])]
    _check_label(records, "forces", "--forces", every=False)
    with pytest.raises(ValueError, match="1 of 2 records lack it"):
        _check_label(records, "forces", "--forces")
    assert main(["train", str(data), "--target", "band_gap", "--out", str(tmp_path / "o")]) == 2
    assert "has no target 'band_gap' (it has: volume;" in capsys.readouterr().err


def test_help_texts_and_subcommand_usage(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--lr LR learning rate of Adam (default: 0.001)", "(default: 0.8 0.1 0.1)",
                  "--epochs EPOCHS maximum number of epochs (default: 100)", "(default: 0)", "(default: float32)"):
        assert shown in text
    assert "(default: None)" not in text and "(default: False)" not in text
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "(default: the shipped default potential, 'default')" in " ".join(capsys.readouterr().out.split())

    with pytest.raises(SystemExit) as exc:  # a misspelt option: the relax usage, not the top-level one
        main(["relax", "in.cif", "-o", str(tmp_path / "r.extxyz"), "--fmx", "0.1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: crystalgnn relax") and "crystalgnn relax: error: unrecognized arguments: --fmx 0.1" in err


def test_predict_into_a_closed_pipe_exits_quietly(energy_model_dir, tmp_path):
    import os
    import subprocess
    import sys

    from ase.build import bulk

    data = tmp_path / "c.extxyz"
    write(data, [bulk("C", "diamond", a=3.5 + 0.01 * k) for k in range(5)], format="extxyz")
    proc = subprocess.Popen(
        [sys.executable, "-m", "crystalgnn_plugins.cli.main", "predict", "--model", str(energy_model_dir), str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    proc.stdout.close()  # like `| head` gone before the CSV is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_train_no_progress_is_quiet_and_resume_names_the_changed_setting(emt_data, tmp_path, capsys):
    import logging
    import warnings

    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for rec in emt_data[0][:12]:
        atoms = rec.atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=rec.targets["energy"])
        frames.append(atoms)
    data = tmp_path / "cu.extxyz"
    write(data, frames, format="extxyz")
    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    lightning_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    lightning_log.addHandler(handler)
    args = ["train", str(data), "--energy", "--epochs", "1", "--batch-size", "4", "-E", "atom_features=8",
            "-E", "num_conv=1"]
    try:
        runs = {}
        for shown in ("--progress-lines", "--no-progress"):
            logged.clear()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                extra = ["--progress-lines", "10"] if shown == "--progress-lines" else ["--no-progress"]
                assert main([*args, *extra, "--out", str(tmp_path / shown.strip("-"))]) == 0
            runs[shown] = (list(logged), [str(w.message) for w in caught])
    finally:
        lightning_log.removeHandler(handler)
    for shown, quiet in (("--progress-lines", False), ("--no-progress", True)):
        messages, warned = runs[shown]
        assert any("GPU available" in m for m in messages)  # other messages still pass
        assert any("litlogger" in m for m in messages) is not quiet
        assert any("LeafSpec" in w for w in warned) is not quiet
    assert not lightning_log.filters  # the tip's filter is gone again
    capsys.readouterr()

    out = str(tmp_path / "no-progress")
    assert main([*args, "--no-progress", "--out", out, "--resume", "--lr", "0.01", "--batch-size", "6"]) == 2
    err = capsys.readouterr().err
    assert "the settings differ" in err and "batch_size 4 -> 6; lr 0.001 -> 0.01;" in err


def test_settings_changes_lists_nested_and_missing_settings():
    from crystalgnn_plugins.training.resumable import settings_changes

    stored = {"lr": 0.001, "model": {"encoder_kwargs": {"cutoff": 5.0}, "elements": ["Cu"]}, "weights": {}}
    new = {"lr": 0.001, "model": {"encoder_kwargs": {"cutoff": 6.0}, "elements": ["Cu"]}, "weights": {},
           "ema_decay": 0.99}
    assert settings_changes(stored, new) == "ema_decay unset -> 0.99; model.encoder_kwargs.cutoff 5.0 -> 6.0"
    assert settings_changes(stored, stored) == ""
    many = settings_changes({f"k{i}": i for i in range(12)}, {f"k{i}": -i for i in range(12)}, limit=3)
    assert many.endswith("; and 8 more") and many.count("->") == 3

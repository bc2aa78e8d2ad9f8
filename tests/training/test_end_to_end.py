"""Train a small potential on EMT labels, then relax with it through ASE."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from crystalgnn_plugins.calculators import GNNCalculator
from crystalgnn_plugins.models import EnergyModel, load_model
from crystalgnn_plugins.training import train


def _relaxed_lattice_constant(calc) -> tuple[float, bool]:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.set_cell(atoms.cell.array * 1.04, scale_atoms=True)  # strained by 4 %
    atoms.rattle(0.05, seed=3)
    atoms.calc = calc
    converged = FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.01, steps=500)
    return atoms.get_volume() ** (1 / 3), bool(converged)


@pytest.mark.slow
def test_train_on_emt_then_relax_matches_emt_lattice_constant(emt_data, tmp_path):
    train_set, val_set = emt_data
    torch.manual_seed(0)
    model = EnergyModel(
        "smooth_cgcnn", {"atom_features": 16, "num_conv": 2, "cutoff": 4.5}, hidden=32, num_hidden=2
    ).double()
    result = train(
        train_set, val_set, model=model, epochs=40, batch_size=8, lr=5e-3, progress=False,
        weights={"energy": 1.0, "forces": 1.0, "stress": 1.0}, out_dir=tmp_path,
    )
    metrics = result.report["metrics"]["val"]
    assert metrics["forces"]["mae"] < 0.15  # eV/Å, EMT forces here are up to ~1 eV/Å
    assert metrics["stress_gpa"]["r2"] > 0.9

    calc = GNNCalculator(tmp_path / "model", dtype=torch.float64)  # from disk, as a user would
    a_gnn, ok_gnn = _relaxed_lattice_constant(calc)
    a_emt, ok_emt = _relaxed_lattice_constant(EMT())
    assert ok_gnn and ok_emt
    assert abs(a_gnn - a_emt) / a_emt < 0.01, (a_gnn, a_emt)


def test_training_report_checkpoints_and_resume(emt_data, tmp_path):
    train_set, val_set = emt_data[0][:24], emt_data[1][:8]
    test_set = emt_data[1][8:16]

    def run(epochs, resume=False, lr=1e-3):
        torch.manual_seed(0)
        model = EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, hidden=8)
        return train(
            train_set, val_set, test_set, model=model, targets=["energy"], epochs=epochs,
            batch_size=8, lr=lr, out_dir=tmp_path, resume=resume, progress=False, seed=7,
        )

    first = run(2)
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "report.json").exists() and (tmp_path / "model" / "model.json").exists()
    report = first.report
    assert report["num_parameters"] == first.model.num_parameters > 0
    assert report["training_time_s"] > 0
    for split in ("val", "test"):
        assert set(report["metrics"][split]["energy_per_atom"]) >= {"mae", "rmse", "r2"}

    with pytest.raises(FileExistsError, match="resume"):
        run(4)
    resumed = run(4, resume=True)
    assert resumed.report["epochs_run"] == 4
    with pytest.raises(ValueError, match="settings differ"):
        run(6, resume=True, lr=1e-2)
    loaded = load_model(tmp_path / "model")
    assert loaded.elements == ["Cu"]


def test_last_checkpoint_follows_every_epoch(emt_data, tmp_path):
    """``last.ckpt`` must be the latest epoch even when the validation loss stops
    improving (lr 0: every epoch has the same loss, the best stays epoch 0)."""
    torch.manual_seed(0)
    model = EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, hidden=8)
    train(emt_data[0][:16], emt_data[1][:8], [], model=model, targets=["energy"], epochs=3, batch_size=8,
          lr=0.0, out_dir=tmp_path, progress=False, seed=7)
    ckpt = tmp_path / "checkpoints"
    last = torch.load(ckpt / "last.ckpt", map_location="cpu", weights_only=False)
    best = torch.load(ckpt / "best.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 2
    assert best["epoch"] == 0


def test_property_model_training_is_reproducible(emt_data, tmp_path):
    from crystalgnn_plugins.models import PropertyModel

    train_set, val_set = emt_data[0][:32], emt_data[1][:8]

    def run(seed):
        torch.manual_seed(seed)
        model = PropertyModel("cgcnn", {"atom_features": 8, "num_conv": 1}, target="energy_per_atom", hidden=16)
        return train(train_set, val_set, model=model, epochs=2, batch_size=8, progress=False, seed=seed)

    a, b = run(3), run(3)
    assert a.report["metrics"]["val"]["energy_per_atom"]["mae"] == pytest.approx(
        b.report["metrics"]["val"]["energy_per_atom"]["mae"], rel=1e-6
    )
    assert np.isfinite(a.report["metrics"]["val"]["energy_per_atom"]["r2"])


def test_cosine_schedule_and_huber_loss_options(emt_data, tmp_path):
    """``lr_schedule="cosine"`` decays per step to lr/100 over the run; loss
    options reach the default energy loss; a bad schedule name is rejected."""
    from crystalgnn_plugins.training.module import CrystalModule

    train_set, val_set = emt_data[0][:16], emt_data[1][:8]
    torch.manual_seed(0)
    model = EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, hidden=8)
    result = train(
        train_set, val_set, model=model, epochs=2, batch_size=8, lr=1e-2, lr_schedule="cosine",
        loss_kwargs={"kind": "huber", "delta": 0.1}, progress=False, out_dir=tmp_path,
    )
    assert result.report["settings"]["lr_schedule"] == "cosine"
    assert result.report["settings"]["loss_kwargs"] == {"kind": "huber", "delta": 0.1}
    # the schedule itself: 10 steps from lr to lr/100 along a cosine
    from types import SimpleNamespace

    module = CrystalModule(model, None, lr=1e-2, lr_schedule="cosine")
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[4] == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + np.cos(np.pi / 2)))
    assert lrs[-1] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="lr_schedule"):
        CrystalModule(model, None, lr_schedule="linear")


def test_fine_tuning_keeps_references_and_starts_from_the_trained_weights(emt_data, tmp_path):
    """``fit_normalisation=False`` continues from a trained model: its element
    references and scale are kept, and training starts from its weights (the
    first validation loss is the trained model's, not a fresh one's)."""
    train_set, val_set = emt_data[0][:24], emt_data[1][:8]
    torch.manual_seed(0)
    model = EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, hidden=8)
    first = train(
        train_set, val_set, model=model, targets=["energy"], epochs=4, batch_size=8, lr=5e-3,
        out_dir=tmp_path / "a", progress=False,
    )
    trained = load_model(tmp_path / "a" / "model")
    refs, scale = trained.reference_energies.clone(), float(trained.scale)
    other = emt_data[0][24:48]  # other frames: refitting would move the references
    tuned = train(
        other, val_set, model=trained, targets=["energy"], epochs=1, batch_size=8, lr=1e-9,
        out_dir=tmp_path / "b", progress=False, fit_normalisation=False,
    )
    assert torch.equal(tuned.model.reference_energies, refs) and float(tuned.model.scale) == scale
    # lr ~ 0: the fine-tuned model is the trained one, so its validation error is the same
    before = first.report["metrics"]["val"]["energy_per_atom"]["mae"]
    after = tuned.report["metrics"]["val"]["energy_per_atom"]["mae"]
    assert after == pytest.approx(before, rel=1e-4)

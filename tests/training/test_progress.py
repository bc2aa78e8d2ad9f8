"""``train(progress=minutes)``: log lines instead of a progress bar."""

import logging

import pytest
import torch

from crystalgnn_plugins.models import EnergyModel
from crystalgnn_plugins.training import train


def _model():
    torch.manual_seed(0)
    return EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, hidden=8)


def test_progress_lines_report_steps_loss_and_validation(emt_data, tmp_path, caplog):
    train_set, val_set = emt_data[0][:24], emt_data[1][:8]
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        train(train_set, val_set, model=_model(), targets=["energy", "forces"], epochs=2, batch_size=8,
              lr=1e-2, out_dir=tmp_path, progress=1e-9)  # a line after every batch
    lines = [r.getMessage() for r in caplog.records]
    steps = [line for line in lines if " step " in line]
    assert len(steps) == 6  # 3 batches x 2 epochs
    assert steps[0].startswith("epoch 1/2 step 1/3 (33 %)")
    assert steps[-1].startswith("epoch 2/2 step 3/3 (100 %), epoch ends in 0 min")
    assert all("training loss" in line and "steps/min" in line for line in steps)
    validated = [line for line in lines if "validated" in line]
    assert [line.split(":")[0] for line in validated] == ["epoch 1/2 validated", "epoch 2/2 validated"]
    assert all("val_loss" in line and "val_forces" in line for line in validated)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_progress_minutes_must_be_positive(emt_data, tmp_path, bad):
    with pytest.raises(ValueError, match="positive number of minutes"):
        train(emt_data[0][:8], emt_data[1][:4], model=_model(), epochs=1, out_dir=tmp_path, progress=bad)

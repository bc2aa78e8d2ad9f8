"""``train(ema_decay=...)``: an exponential moving average of the weights is validated,
checkpointed and returned, and survives a resume."""

import lightning as L
import pytest
import torch

from crystalgnn_plugins.models import EnergyModel
from crystalgnn_plugins.training import train
from crystalgnn_plugins.training.module import CrystalModule


def _model():
    torch.manual_seed(0)
    return EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, hidden=8)


def _run(data, out, **kwargs):
    train_set, val_set = data[0][:24], data[1][:8]
    return train(train_set, val_set, model=_model(), targets=["energy", "forces"], epochs=2, batch_size=8,
                 lr=1e-2, out_dir=out, progress=False, seed=3, **kwargs)


def test_ema_decay_is_checked(emt_data, tmp_path):
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="ema_decay"):
            _run(emt_data, tmp_path / str(bad), ema_decay=bad)


def test_the_average_is_what_is_checkpointed_and_returned(emt_data, tmp_path, monkeypatch):
    """With decay d the checkpoint's weights are ``a_1 = w_1, a_k = d a_(k-1) + (1 - d) w_k``
    over the raw weights after each of the 6 optimiser steps; the raw ones are kept beside."""
    raw = []  # the raw weights after every optimiser step

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            raw.append({k: v.detach().clone() for k, v in pl_module.model.named_parameters()})

    real_configure = CrystalModule.configure_callbacks
    monkeypatch.setattr(CrystalModule, "configure_callbacks", lambda self: [*real_configure(self), Record()])
    decay = 0.6
    result = _run(emt_data, tmp_path, ema_decay=decay)
    assert len(raw) == 6
    average = dict(raw[0])
    for step in raw[1:]:
        average = {k: decay * average[k] + (1 - decay) * step[k] for k in average}
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    for name, value in average.items():
        assert torch.allclose(last["state_dict"][f"model.{name}"], value, atol=1e-6), name
        assert torch.allclose(last["current_model_state"][f"model.{name}"], raw[-1][name], atol=1e-6), name
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    returned = dict(result.model.named_parameters())
    for name, value in returned.items():
        assert torch.equal(best["state_dict"][f"model.{name}"], value.detach()), name
    assert result.report["settings"]["ema_decay"] == decay
    assert any(not torch.allclose(average[k], raw[-1][k]) for k in average)  # an average, not the last weights


def test_a_resumed_run_continues_the_average(emt_data, tmp_path, monkeypatch):
    """Killed after 4 of 6 steps and resumed, the run ends with the same averaged weights
    as an uninterrupted one (the raw weights and the average are both in ``last.ckpt``)."""
    whole = _run(emt_data, tmp_path / "whole", ema_decay=0.6)

    real_step = CrystalModule.training_step
    steps = []

    def killed_step(self, batch, batch_idx):
        if len(steps) == 4:
            raise RuntimeError("killed")
        steps.append(batch_idx)
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(CrystalModule, "training_step", killed_step)
    with pytest.raises(RuntimeError, match="killed"):
        _run(emt_data, tmp_path / "split", ema_decay=0.6, checkpoint_minutes=1e-9)
    monkeypatch.setattr(CrystalModule, "training_step", real_step)
    resumed = _run(emt_data, tmp_path / "split", ema_decay=0.6, checkpoint_minutes=1e-9, resume=True)
    for (name, a), b in zip(whole.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name

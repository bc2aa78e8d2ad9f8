"""Mid-epoch checkpoints: the loader state and a training run killed in an epoch."""

import pytest
import torch

from crystalgnn_plugins.models import EnergyModel
from crystalgnn_plugins.training import train
from crystalgnn_plugins.training.resumable import EpochShuffle, ResumableLoader


def test_epoch_shuffle_depends_on_seed_and_epoch_only():
    a, b, c = EpochShuffle(50, seed=1), EpochShuffle(50, seed=1), EpochShuffle(50, seed=2)
    assert list(a) == list(b) != list(c)
    assert sorted(a) == list(range(50))
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(50))
    a.set_epoch(0)
    assert list(a) == first
    a.skip(0, 20)
    assert list(a) == first[20:]
    assert list(a) == first  # a skip applies to one pass only
    a.skip(3, 20)  # another epoch's position: ignored
    assert list(a) == first


def test_loader_state_resumes_the_epoch_with_the_unseen_batches():
    data = list(range(23))
    loader = ResumableLoader(data, batch_size=4, seed=5)
    loader.shuffle_sampler.set_epoch(2)
    full = [b.tolist() for b in loader]
    assert loader.state_dict() == {"epoch": 2, "batches_done": 6}
    seen = []
    for batch in loader:
        seen.append(batch.tolist())
        if len(seen) == 2:
            break
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches_done": 2}

    fresh = ResumableLoader(data, batch_size=4, seed=5)  # a new process
    fresh.load_state_dict(state)
    fresh.shuffle_sampler.set_epoch(2)  # Lightning sets the epoch before iterating
    rest = [b.tolist() for b in fresh]
    assert seen + rest == full
    assert fresh.state_dict() == {"epoch": 2, "batches_done": 6}
    fresh.shuffle_sampler.set_epoch(3)  # the next epoch is whole again
    assert len(list(fresh)) == 6


def test_training_killed_mid_epoch_resumes_with_the_unseen_batches(emt_data, tmp_path, monkeypatch, caplog):
    """``checkpoint_minutes``: ``last.ckpt`` is written within the epoch; a run killed
    in its second epoch and resumed trains the rest of that epoch on exactly the frames
    it had not seen in it (2 epochs of 3 batches, 6 optimiser steps in all)."""
    from crystalgnn_plugins.training.module import CrystalModule

    train_set, val_set = emt_data[0][:24], emt_data[1][:8]

    def run(resume=False):
        torch.manual_seed(0)
        model = EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, hidden=8)
        return train(train_set, val_set, model=model, targets=["energy"], epochs=2, batch_size=8,
                     out_dir=tmp_path, resume=resume, progress=1e-9 if resume else False, seed=7,
                     checkpoint_minutes=1e-9)

    real_step = CrystalModule.training_step
    frames = []  # the energies of each trained batch identify its frames

    def recording_step(self, batch, batch_idx):
        if len(frames) == 4:
            raise RuntimeError("killed")
        frames.append(sorted(batch[1]["energy"].tolist()))
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(CrystalModule, "training_step", recording_step)
    with pytest.raises(RuntimeError, match="killed"):
        run()
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4 and last["epoch"] == 1  # one batch into the second epoch
    second_epoch_start = frames[3]
    frames.clear()
    resumed = run(resume=True)
    assert resumed.report["epochs_run"] == 2 and len(frames) == 2
    second_epoch = sorted(second_epoch_start + frames[0] + frames[1])
    assert second_epoch == pytest.approx(sorted(float(r.targets["energy"]) for r in train_set), rel=1e-6)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 6
    # progress lines of the resumed run count on from where the epoch stopped
    steps = [r.getMessage() for r in caplog.records if " step " in r.getMessage()]
    assert [line.split(" (")[0] for line in steps] == ["epoch 2/2 step 2/3", "epoch 2/2 step 3/3"]

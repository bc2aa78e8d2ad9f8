"""Function-preserving growth (wider, deeper) of a PaiNN energy model."""

import numpy as np
import pytest
import torch
from ase.build import bulk

from crystalgnn_plugins.models import EnergyModel, load_model, save_model
from crystalgnn_plugins.training.grow import deepen_energy_model, widen_energy_model


def _model(**kwargs) -> EnergyModel:
    torch.manual_seed(0)
    model = EnergyModel("painn", {"atom_features": 8, "num_layers": 2, "cutoff": 4.0, "num_radial": 6}, hidden=12, **kwargs)
    model.set_elements(["Na", "Cl", "Si"])
    # non-trivial buffers too: they must be carried over
    with torch.no_grad():
        model.reference_energies[[11, 14, 17]] = torch.tensor([-1.3, -5.4, -1.8])
        model.scale.fill_(0.7)
        model.shift.fill_(0.2)
    return model.double().eval()


def _crystals():
    nacl = bulk("NaCl", "rocksalt", 5.6).repeat((2, 1, 1))
    nacl.rattle(0.1, seed=1)
    si = bulk("Si", "diamond", 5.43)
    si.rattle(0.05, seed=2)
    si.set_cell(si.cell.array @ np.array([[1.0, 0.02, 0], [0.02, 0.98, 0], [0, 0, 1.01]]), scale_atoms=True)
    return [nacl, si]


def _predict(model, crystals):
    out = model(model.graphs(crystals), compute_forces=True, compute_stress=True)
    return {k: out[k].detach() for k in ("energy", "forces", "stress")}


GROWTHS = [(widen_energy_model, "atom_features", 13, 8), (deepen_energy_model, "num_layers", 4, 2)]


@pytest.mark.parametrize("core_repulsion", [False, True])
@pytest.mark.parametrize("grow, option, value, _", GROWTHS)
def test_grown_model_predicts_the_same(grow, option, value, _, core_repulsion):
    model = _model(core_repulsion=core_repulsion)
    grown = grow(model, value).eval()
    assert grown.encoder.get_config()[option] == value
    assert len(grown.encoder.messages) == grown.encoder.get_config()["num_layers"]
    assert grown.num_parameters > model.num_parameters
    assert grown.elements == model.elements
    assert (grown.core_repulsion is None) == (not core_repulsion)
    before, after = _predict(model, _crystals()), _predict(grown, _crystals())
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=1e-10)


@pytest.mark.parametrize("grow, option, value, too_small", GROWTHS)
def test_grow_refuses_other_models(grow, option, value, too_small):
    with pytest.raises(ValueError, match=f"{option} must exceed"):
        grow(_model(), too_small)
    cgcnn = EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0})
    with pytest.raises(ValueError, match="only a PaiNN"):
        grow(cgcnn, value)


def test_new_channels_learn():
    """The new channels start with no influence but get gradients: one descent step
    changes the weights that read them."""
    wide = widen_energy_model(_model(), 16)
    out = wide(wide.graphs(_crystals()), compute_forces=True, compute_stress=True, create_graph=True)
    (out["energy"].sum() + out["forces"].pow(2).sum()).backward()
    grad = wide.head[0].weight.grad
    assert grad[:, 8:].abs().sum() > 0  # the readout's weights on the new features
    assert wide.head[0].weight[:, 8:].abs().sum() == 0  # which start at zero
    phi = wide.encoder.messages[1].phi[0].weight
    assert phi.grad[:8, 8:].abs().sum() > 0 and phi[:8, 8:].abs().sum() == 0


def test_widened_model_saves_and_loads(tmp_path):
    wide = widen_energy_model(_model(), 12)
    loaded = load_model(save_model(wide, tmp_path / "wide")).double().eval()
    before, after = _predict(wide.eval(), _crystals()), _predict(loaded, _crystals())
    torch.testing.assert_close(after["energy"], before["energy"])


def test_new_blocks_learn():
    """The new blocks start with zero output, their last layers get gradients, and
    one descent step makes them change the predictions."""
    deep = deepen_energy_model(_model(), 3).train()
    out = deep(deep.graphs(_crystals()), compute_forces=True, compute_stress=True, create_graph=True)
    loss = out["energy"].sum() + out["forces"].pow(2).sum()
    loss.backward()
    for last in (deep.encoder.messages[2].phi[-1], deep.encoder.updates[2].mlp[-1]):
        assert last.weight.abs().sum() == 0 and last.weight.grad.abs().sum() > 0
    before = _predict(deep.eval(), _crystals())
    torch.optim.SGD(deep.parameters(), lr=1e-2).step()
    after = _predict(deep.eval(), _crystals())
    assert not torch.allclose(after["energy"], before["energy"])


def test_deepened_and_widened_model_saves_and_loads(tmp_path):
    grown = deepen_energy_model(widen_energy_model(_model(), 12), 3)
    loaded = load_model(save_model(grown, tmp_path / "grown")).double().eval()
    before, after = _predict(grown.eval(), _crystals()), _predict(loaded, _crystals())
    torch.testing.assert_close(after["forces"], before["forces"])

"""A throwaway plugin registering an encoder is found, trained, saved, loaded
and used by GNNCalculator, like a third-party package would be."""

import types

import numpy as np
import pytest
import torch
from ase.build import bulk
from torch import nn

from crystalgnn_plugins import plugins
from crystalgnn_plugins.calculators import GNNCalculator
from crystalgnn_plugins.encoders import Encoder, build_encoder
from crystalgnn_plugins.encoders.basis import GaussianExpansion, PolynomialEnvelope
from crystalgnn_plugins.hookspecs import hookimpl
from crystalgnn_plugins.models import EnergyModel
from crystalgnn_plugins.testing import EncoderConformance
from crystalgnn_plugins.training import train


class PairEncoder(Encoder):
    """Per-atom features: element embedding + smooth sum of radial terms."""

    smooth = True

    def __init__(self, features: int = 8, cutoff: float = 4.0):
        super().__init__()
        self.save_config(features=features, cutoff=cutoff)
        self.cutoff, self.out_features = cutoff, features
        self.embed = nn.Embedding(119, features)
        self.rbf = GaussianExpansion(0.0, cutoff, 0.5)
        self.envelope = PolynomialEnvelope(cutoff)
        self.radial = nn.Linear(self.rbf.num_features, features)

    def forward(self, graph, edge_vectors):
        d = edge_vectors.norm(dim=-1)
        m = self.radial(self.rbf(d)) * self.envelope(d).unsqueeze(-1) * self.embed(graph.atomic_numbers[graph.edge_index[1]])
        h = self.embed(graph.atomic_numbers)
        return h + torch.zeros_like(h).index_add(0, graph.edge_index[0], m)


def _plugin_module():
    mod = types.ModuleType("throwaway_pair_plugin")

    @hookimpl
    def register_encoders(register):
        register("test_pair", PairEncoder, description="throwaway test encoder")

    mod.register_encoders = register_encoders
    return mod


@pytest.fixture
def pair_plugin():
    name = plugins.register_plugin(_plugin_module(), "throwaway-pair")
    try:
        yield name
    finally:
        plugins.unregister_plugin(name)


def test_plugin_encoder_found_trained_and_used_by_calculator(pair_plugin, emt_data, tmp_path):
    entry = plugins.get_registry("encoders").entry("test_pair")
    assert entry.plugin == "throwaway-pair" and entry.obj is PairEncoder
    assert isinstance(build_encoder("test_pair", features=4), PairEncoder)

    train_set, val_set = emt_data[0][:40], emt_data[1][:10]
    torch.manual_seed(0)
    model = EnergyModel("test_pair", {"features": 8, "cutoff": 4.0}, hidden=16)
    result = train(train_set, val_set, model=model, epochs=3, batch_size=8, progress=False, out_dir=tmp_path)
    assert result.report["encoder"] == "test_pair"

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=0)
    atoms.calc = GNNCalculator(tmp_path / "model")  # rebuilt through the registry
    assert np.isfinite(atoms.get_potential_energy())
    assert atoms.get_forces().shape == (4, 3)


def test_saved_model_needs_its_plugin(pair_plugin, tmp_path):
    from crystalgnn_plugins.models import ModelFileError, load_model, save_model

    save_model(EnergyModel("test_pair", {"features": 4}), tmp_path / "m")
    plugins.unregister_plugin(pair_plugin)
    try:
        with pytest.raises(ModelFileError, match="unknown encoder 'test_pair'") as info:
            load_model(tmp_path / "m")
        # the error says which plugin the model was saved with
        assert "saved with the encoder 'test_pair' of plugin 'throwaway-pair': install and enable" in str(info.value)
    finally:
        plugins.register_plugin(_plugin_module(), pair_plugin)


class TestPairEncoderConformance(EncoderConformance):
    """The shipped conformance kit runs on a third-party encoder too."""

    encoder = "test_pair"
    encoder_kwargs = {"features": 6, "cutoff": 4.0}
    seeds = (0,)

    @pytest.fixture(autouse=True)
    def _registered(self, pair_plugin):
        yield

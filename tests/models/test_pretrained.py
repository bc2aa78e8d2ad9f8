"""Named trained models: the ``register_pretrained`` hook, ``resolve_model`` and
``GNNCalculator(model="name")``."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from ase.build import bulk

from crystalgnn_plugins import plugins
from crystalgnn_plugins.calculators import GNNCalculator
from crystalgnn_plugins.hookspecs import hookimpl
from crystalgnn_plugins.models import EnergyModel, ModelFileError, save_model
from crystalgnn_plugins.models.pretrained import (
    available_models,
    model_path,
    pretrained_path,
    resolve_model,
)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, elements=["Cu"], hidden=8)
    save_model(model.eval(), tmp_path / "cu")
    return model, tmp_path / "cu"


@pytest.fixture
def plugin(saved):
    """A third-party plugin registering one model as a path and one as a callable."""
    _, path = saved

    @hookimpl
    def register_pretrained(register):
        register("cu-test", path, description="tiny Cu model")
        register("cu-lazy", lambda: str(path))
        register("broken", path.parent / "missing")

    name = plugins.register_plugin(types.SimpleNamespace(register_pretrained=register_pretrained), "pretrained-test")
    yield
    plugins.unregister_plugin(name)


def test_registered_models_resolve_by_name(saved, plugin):
    model, _ = saved
    assert {"cu-test", "cu-lazy"} <= set(available_models())
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = GNNCalculator(model)
    expected = atoms.get_potential_energy()
    for name in ("cu-test", "cu-lazy"):
        atoms.calc = GNNCalculator(name)
        assert atoms.get_potential_energy() == pytest.approx(expected, abs=1e-6)
        assert isinstance(resolve_model(name), EnergyModel)


def test_unknown_and_broken_names_are_clear(plugin):
    with pytest.raises(ModelFileError, match=r"no model 'nope'.*registered: .*cu-test"):
        resolve_model("nope")
    with pytest.raises(ModelFileError, match="'broken' is registered at .*missing"):
        resolve_model("broken")


def test_a_folder_without_a_model_does_not_hide_a_registered_name(saved, plugin, tmp_path, monkeypatch):
    """A folder called like a registered model (e.g. ``default``) in the working
    directory does not break ``GNNCalculator()``/``resolve_model(name)``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cu-test").mkdir()
    (tmp_path / "default").mkdir()
    with pytest.warns(UserWarning, match="'cu-test' is taken as the registered model"):
        assert isinstance(resolve_model("cu-test"), EnergyModel)
    assert model_path(None) == pretrained_path("default")  # no argument: never the folder
    # a folder holding a saved model still wins over the name
    model, path = saved
    save_model(model, tmp_path / "cu-test")
    assert model_path("cu-test") == Path("cu-test")


def test_a_run_folder_points_to_its_model(saved, tmp_path):
    model, _ = saved
    save_model(model, tmp_path / "run" / "model")
    with pytest.raises(ModelFileError, match=r"no saved model here .*did you mean .*run/model\?"):
        resolve_model(tmp_path / "run")

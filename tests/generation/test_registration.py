"""The generator is registered through the plugin hooks like any plugin."""

from __future__ import annotations

import pytest

from crystalgnn_plugins import plugins
from crystalgnn_plugins.plugins import BUILTIN_DISTRIBUTION, get_registry


@pytest.fixture(autouse=True)
def fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def test_generator_is_registered():
    from crystalgnn_plugins.generation import CrystalStructureSource

    entry = get_registry("generators").entry("crystal_flow")
    assert entry.obj is CrystalStructureSource
    assert entry.plugin == "crystalgnn_plugins.builtins.models"
    assert entry.distribution == BUILTIN_DISTRIBUTION
    assert "get_structures" in entry.description


def test_model_type_is_registered():
    from crystalgnn_plugins.generation import CrystalFlow

    assert get_registry("models").get("crystal_flow") is CrystalFlow
    assert CrystalFlow.model_type == "crystal_flow"


def test_plugins_command_lists_the_generator(capsys):
    from crystalgnn_plugins.cli.main import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "crystal_flow" in out

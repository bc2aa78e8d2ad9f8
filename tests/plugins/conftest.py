"""Fixtures isolating the plugin manager from built-ins and installed plugins."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import crystalgnn_plugins.builtins as builtin_pkg
from crystalgnn_plugins import plugins


@pytest.fixture(autouse=True)
def isolated_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No built-ins, no external plugins, fresh caches before and after each test."""
    monkeypatch.setattr(builtin_pkg, "DEFAULT_PLUGINS", ())
    monkeypatch.setenv(plugins.ENV_VAR, "")
    plugins.reset()
    try:
        yield
    finally:
        plugins.reset()


@pytest.fixture
def use_plugin() -> Iterator[Callable[..., str]]:
    """``use_plugin(obj, name=None) -> name``: register a throwaway plugin for one test."""
    names: list[str] = []

    def add(obj: object, name: str | None = None) -> str:
        registered = plugins.register_plugin(obj, name)
        names.append(registered)
        return registered

    try:
        yield add
    finally:
        manager = plugins._pm  # do not (re)load plugins just to clean up
        for name in reversed(names):
            if manager is not None and manager.get_plugin(name) is not None:
                plugins.unregister_plugin(name)

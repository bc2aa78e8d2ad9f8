"""Built-in plugins shipped with ``crystalgnn_plugins``.

Each module listed in :data:`DEFAULT_PLUGINS` is imported and registered by
:func:`crystalgnn_plugins.plugins.get_plugin_manager` before any external
(entry-point) plugin. The modules implement the hooks of
:mod:`crystalgnn_plugins.hookspecs` and do their heavy imports inside the hook
functions, so importing them is cheap.
"""

from __future__ import annotations

#: Module names of the built-in plugins, registered under these names.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "crystalgnn_plugins.builtins.encoders",
    "crystalgnn_plugins.builtins.losses",
    "crystalgnn_plugins.builtins.models",
    "crystalgnn_plugins.builtins.pretrained",
    "crystalgnn_plugins.builtins.readers",
)

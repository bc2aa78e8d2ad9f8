"""crystalgnn-plugins: crystal graph neural networks for ASE and pymatgen.

Heavy modules (torch, ase, pymatgen) are imported on first use of the names below,
not at package import.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from crystalgnn_plugins._version import __version__

_LAZY = {
    "GNNCalculator": "crystalgnn_plugins.calculators",
    "CrystalGraph": "crystalgnn_plugins.graph",
    "EnergyModel": "crystalgnn_plugins.models",
    "PropertyModel": "crystalgnn_plugins.models",
    "load_model": "crystalgnn_plugins.models",
    "save_model": "crystalgnn_plugins.models",
    "read_records": "crystalgnn_plugins.data",
    "train": "crystalgnn_plugins.training",
    "relax": "crystalgnn_plugins.relaxation",
    "get_registry": "crystalgnn_plugins.plugins",
    "get_plugin_manager": "crystalgnn_plugins.plugins",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from crystalgnn_plugins.calculators import GNNCalculator
    from crystalgnn_plugins.data import read_records
    from crystalgnn_plugins.graph import CrystalGraph
    from crystalgnn_plugins.models import EnergyModel, PropertyModel, load_model, save_model
    from crystalgnn_plugins.plugins import get_plugin_manager, get_registry
    from crystalgnn_plugins.training import train


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'crystalgnn_plugins' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

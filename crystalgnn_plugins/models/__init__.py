"""Models: encoder + readout; energy models give forces and stress by autograd."""

from crystalgnn_plugins.models.base import CrystalModel, UnknownElementError
from crystalgnn_plugins.models.energy import EnergyModel
from crystalgnn_plugins.models.io import ModelFileError, load_model, read_model_metadata, save_model
from crystalgnn_plugins.models.property import PropertyModel

__all__ = [
    "CrystalModel",
    "EnergyModel",
    "ModelFileError",
    "PropertyModel",
    "UnknownElementError",
    "load_model",
    "read_model_metadata",
    "save_model",
]

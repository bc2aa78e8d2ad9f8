"""Built-in model types, registered through the same hook as third-party plugins."""

from __future__ import annotations

from crystalgnn_plugins.hookspecs import hookimpl


@hookimpl
def register_models(register):
    from crystalgnn_plugins.generation.flow import CrystalFlow
    from crystalgnn_plugins.models import EnergyModel, PropertyModel

    register("energy", EnergyModel, description="total energy (eV) with forces and stress by autograd")
    register("property", PropertyModel, description="one scalar property per crystal (intensive or extensive)")
    register("crystal_flow", CrystalFlow, description="flow-matching crystal generator (saved generator weights)")


@hookimpl
def register_generators(register):
    from crystalgnn_plugins.generation.source import CrystalStructureSource

    register(
        "crystal_flow",
        CrystalStructureSource,
        description="periodic equivariant flow-matching generator; get_structures(n, ...) -> pymatgen Structures",
    )

"""Crystal generation: a periodic, equivariant flow-matching model and a pymatgen structure source.

- :class:`CrystalFlow` (:mod:`.flow`): flow matching over species, fractional
  coordinates (torus) and lattice (symmetric log representation), with a latent
  autoencoder; its network (:mod:`.network`) predicts per-edge actions aggregated
  into a symmetric lattice action and per-atom displacements.
- :func:`sample_flow` (:mod:`.sampling`) with guidance terms (:mod:`.guidance`):
  repulsion, learned energy, charge balance, property targets.
- :func:`train_generator` (:mod:`.training`); :class:`LatentBank` (:mod:`.latent_bank`):
  latent codes of the training crystals, for sampling from the latent autoencoder.
- :class:`CrystalStructureSource` (:mod:`.source`): ``get_structures(n, ...)``
  returning pymatgen ``Structure``s, and :class:`GenerateStructuresTransformation`.

See ``docs/generation.md``.
"""

from crystalgnn_plugins.generation.flow import CrystalBatch, CrystalFlow, repulsion_energy
from crystalgnn_plugins.generation.guidance import (
    ChargeBalanceTerm,
    EnergyTerm,
    PropertyTerm,
    RepulsionTerm,
)
from crystalgnn_plugins.generation.latent_bank import LatentBank
from crystalgnn_plugins.generation.network import PeriodicActionNetwork
from crystalgnn_plugins.generation.sampling import SampledCrystals, sample_flow
from crystalgnn_plugins.generation.source import CrystalStructureSource, resolve_generator
from crystalgnn_plugins.generation.training import train_generator

__all__ = [
    "ChargeBalanceTerm",
    "CrystalBatch",
    "CrystalFlow",
    "CrystalStructureSource",
    "GenerateStructuresTransformation",
    "EnergyTerm",
    "LatentBank",
    "PeriodicActionNetwork",
    "PropertyTerm",
    "RepulsionTerm",
    "SampledCrystals",
    "repulsion_energy",
    "sample_flow",
    "resolve_generator",
    "train_generator",
]


def __getattr__(name: str):
    # pymatgen's transformation machinery is imported only when asked for
    if name == "GenerateStructuresTransformation":
        from crystalgnn_plugins.generation.transformation import GenerateStructuresTransformation

        return GenerateStructuresTransformation
    raise AttributeError(f"module 'crystalgnn_plugins.generation' has no attribute {name!r}")

"""Test helpers shipped with the package: random crystals and a conformance
kit that any encoder (built-in or plugin) can run. Needs pytest and hypothesis."""

from crystalgnn_plugins.testing.conformance import EncoderConformance
from crystalgnn_plugins.testing.structures import random_crystal, rattled_supercell

__all__ = ["EncoderConformance", "random_crystal", "rattled_supercell"]

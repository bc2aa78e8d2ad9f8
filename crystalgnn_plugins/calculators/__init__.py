"""ASE calculators backed by crystalgnn-plugins models."""

from crystalgnn_plugins.calculators.gnn_calculator import GNNCalculator
from crystalgnn_plugins.calculators.host_memory import reuse_host_memory

__all__ = ["GNNCalculator", "reuse_host_memory"]

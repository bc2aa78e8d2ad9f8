"""ASE calculators backed by crystalgnn-plugins models."""

from crystalgnn_plugins.calculators.gnn_calculator import GNNCalculator

__all__ = ["GNNCalculator"]

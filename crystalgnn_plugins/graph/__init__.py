"""Periodic crystal graphs: neighbour lists with image offsets and batching."""

from crystalgnn_plugins.graph.crystal_graph import CrystalGraph, GraphError, to_atoms
from crystalgnn_plugins.graph.neighbors import NeighborList, neighbor_list

__all__ = ["CrystalGraph", "GraphError", "NeighborList", "neighbor_list", "to_atoms"]

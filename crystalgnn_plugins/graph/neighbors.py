"""Periodic neighbour lists (vesin), with image offsets kept for autograd."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NeighborList:
    """Directed edges ``center -> neighbor`` of one structure.

    Attributes:
        centers: index ``i`` of the central atom of each edge, shape ``(E,)``.
        neighbors: index ``j`` of the neighbouring atom, shape ``(E,)``.
        offsets: integer cell shifts ``S`` so that the edge vector is
            ``r_j - r_i + S @ cell`` (Å), shape ``(E, 3)``.
        distances: edge lengths in Å, shape ``(E,)``.
    """

    centers: np.ndarray
    neighbors: np.ndarray
    offsets: np.ndarray
    distances: np.ndarray


def neighbor_list(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray | bool,
    cutoff: float,
    max_neighbors: int | None = None,
) -> NeighborList:
    """All neighbours within ``cutoff`` (Å), including periodic and self-images.

    Edges between the same pair through different periodic images are kept
    (a multigraph); an atom's own periodic images are neighbours too. With
    ``max_neighbors`` only the nearest ``max_neighbors`` edges of each atom are
    kept (as in CGCNN); ties are broken by a stable sort on distance.
    """
    import vesin

    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    return _compute(calculator, positions, cell, pbc, max_neighbors)


def batched_neighbor_lists(
    positions: np.ndarray,
    cells: np.ndarray,
    pbc: np.ndarray,
    counts: list[int],
    cutoff: float,
    max_neighbors: int | None = None,
) -> list[NeighborList]:
    """:func:`neighbor_list` of many structures stored one after another:
    ``positions`` ``(N, 3)`` Å, ``cells`` ``(B, 3, 3)``, ``pbc`` ``(B, 3)``, ``counts``
    atoms per structure. Indices are local to each structure."""
    import vesin

    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (len(counts), 3))
    out, start = [], 0
    for k, n in enumerate(counts):
        out.append(_compute(calculator, positions[start : start + n], cells[k], pbc[k], max_neighbors))
        start += n
    return out


def _compute(calculator, positions, cell, pbc, max_neighbors: int | None) -> NeighborList:
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc_arr = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if not pbc_arr.any():
        cell = np.zeros((3, 3))
    i, j, shifts, d = calculator.compute(positions, cell, [bool(p) for p in pbc_arr], quantities="ijSd")
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    shifts = shifts.astype(np.int64)
    if max_neighbors is None:
        # stable order by centre only (cheap); the edge set is what matters
        order = np.argsort(i, kind="stable")
    else:
        # by centre, then distance, so truncation keeps the nearest
        order = np.lexsort((d, i))
    i, j, shifts, d = i[order], j[order], shifts[order], d[order]
    if max_neighbors is not None and len(i):
        starts = np.searchsorted(i, i, side="left")
        rank = np.arange(len(i)) - starts
        keep = rank < max_neighbors
        i, j, shifts, d = i[keep], j[keep], shifts[keep], d[keep]
    return NeighborList(centers=i, neighbors=j, offsets=shifts, distances=d)

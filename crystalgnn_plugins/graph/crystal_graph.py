"""Batched periodic crystal graphs as torch tensors.

Edge vectors are *not* stored: they are recomputed in torch from positions,
cell and the integer image offsets (:meth:`CrystalGraph.edge_vectors`), so
forces and stress follow by autograd.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from crystalgnn_plugins.graph.neighbors import batched_neighbor_lists, neighbor_list

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms
    from pymatgen.core import Structure

#: Two atoms closer than this (Å) are treated as overlapping: an error.
MIN_DISTANCE = 1e-4


def _overlap(nl) -> str | None:
    """Why a neighbour list's structure cannot be a graph (atoms closer than
    ``MIN_DISTANCE``), or ``None``."""
    if len(nl.distances) and nl.distances.min() < MIN_DISTANCE:
        k = int(nl.distances.argmin())
        return f"atoms {nl.centers[k]} and {nl.neighbors[k]} overlap (distance {nl.distances[k]:.2e} Å)"
    return None


class GraphError(ValueError):
    """A structure cannot be turned into a crystal graph (names the structure).

    ``failures`` maps the batch rows that failed to their reasons when a batch of
    structures was built at once (:meth:`CrystalGraph.from_batch`), else is empty."""

    def __init__(self, message: str, failures: dict[int, str] | None = None):
        super().__init__(message)
        self.failures = dict(failures or {})


#: longest periodic cell vector accepted (Å); vacuum belongs in non-periodic directions
MAX_CELL_LENGTH = 1e5
#: smallest length (1 periodic direction), area (2) or volume (3) spanned by the periodic
#: cell vectors (Å, Å², Å³): a smaller cell puts every atom within ~1 Å of its own image
MIN_CELL_MEASURE = 0.5

@dataclass
class CrystalGraph:
    """One or many crystals as a single (multi)graph.

    Attributes:
        atomic_numbers: ``(N,)`` long.
        positions: ``(N, 3)`` Cartesian positions, Å.
        cell: ``(B, 3, 3)`` lattice vectors as rows, Å (zeros where not periodic).
        pbc: ``(B, 3)`` bool.
        edge_index: ``(2, E)`` long; row 0 the centre atom ``i``, row 1 the neighbour ``j``.
        offsets: ``(E, 3)`` integer image shifts (stored as float) so that the edge
            vector is ``r_j - r_i + offsets @ cell``.
        batch: ``(N,)`` long, index of the crystal each atom belongs to.
        num_atoms: ``(B,)`` long.
        cutoff: neighbour cutoff, Å.
        max_neighbors: per-atom edge cap used when building, or ``None``.
        ids: optional identifiers of the crystals (used in error messages).
        species_weights: optional ``(N, 119)`` soft species, weights over atomic
            numbers (rows sum to 1). Encoders that support it embed an atom as the
            weighted mean of the element embeddings, which makes a model
            differentiable in the species (used by generator guidance); ``None``
            means the one-hot ``atomic_numbers``.
    """

    atomic_numbers: torch.Tensor
    positions: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    edge_index: torch.Tensor
    offsets: torch.Tensor
    batch: torch.Tensor
    num_atoms: torch.Tensor
    cutoff: float
    max_neighbors: int | None = None
    ids: list[str] = field(default_factory=list)
    species_weights: torch.Tensor | None = None

    # ------------------------------------------------------------------ build
    @classmethod
    def from_atoms(
        cls,
        atoms: Atoms,
        cutoff: float,
        max_neighbors: int | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        structure_id: str | None = None,
    ) -> CrystalGraph:
        """Graph of one ASE ``Atoms`` (periodic in any directions, or not at all)."""
        sid = structure_id if structure_id is not None else atoms.get_chemical_formula()
        numbers = np.asarray(atoms.numbers, dtype=np.int64)
        positions = np.asarray(atoms.positions, dtype=np.float64)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        if len(numbers) == 0:
            raise GraphError(f"structure {sid!r}: has no atoms")
        if not np.isfinite(positions).all():
            raise GraphError(f"structure {sid!r}: non-finite positions")
        if pbc.any():
            periodic = cell[pbc]
            if not np.isfinite(periodic).all():
                raise GraphError(f"structure {sid!r}: non-finite periodic cell: {cell.tolist()}")
            longest = float(np.linalg.norm(periodic, axis=1).max())
            if longest > MAX_CELL_LENGTH:
                raise GraphError(f"structure {sid!r}: a periodic cell vector is {longest:.3g} Å long (more than "
                                 f"{MAX_CELL_LENGTH:.0e} Å); make vacuum directions non-periodic (pbc=False)")
            # length, area or volume spanned by the periodic vectors: below MIN_CELL_MEASURE every atom
            # sits on top of its own periodic image (and the neighbour search would need millions of images)
            measure = float(np.sqrt(max(np.linalg.det(periodic @ periodic.T), 0.0)))
            if measure < MIN_CELL_MEASURE:
                raise GraphError(f"structure {sid!r}: periodic cell is degenerate (its periodic vectors span "
                                 f"{measure:.3g} Å^{int(pbc.sum())}): {cell.tolist()}")
        nl = neighbor_list(positions, cell, pbc, cutoff, max_neighbors)
        overlap = _overlap(nl)
        if overlap:
            raise GraphError(f"structure {sid!r}: {overlap}")
        return cls(
            atomic_numbers=torch.from_numpy(numbers),
            positions=torch.tensor(positions, dtype=dtype),
            cell=torch.tensor(cell if pbc.any() else np.zeros((3, 3)), dtype=dtype).unsqueeze(0),
            pbc=torch.from_numpy(pbc.copy()).unsqueeze(0),
            edge_index=torch.from_numpy(np.stack([nl.centers, nl.neighbors])),
            offsets=torch.tensor(nl.offsets, dtype=dtype),
            batch=torch.zeros(len(numbers), dtype=torch.long),
            num_atoms=torch.tensor([len(numbers)]),
            cutoff=float(cutoff),
            max_neighbors=max_neighbors,
            ids=[sid],
        )

    @classmethod
    def from_batch(
        cls,
        atomic_numbers: torch.Tensor,
        positions: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
        num_atoms: Sequence[int],
        cutoff: float,
        max_neighbors: int | None = None,
        *,
        ids: Sequence[str] | None = None,
    ) -> CrystalGraph:
        """Graph of many structures stored one after another, without ``Atoms``:
        ``positions`` ``(N, 3)`` Å and ``cell`` ``(B, 3, 3)`` are used as given (so
        gradients flow to them), ``pbc`` ``(B, 3)``. Raises :class:`GraphError`
        (with ``failures``, batch row -> reason) if atoms of some structures overlap."""
        counts = [int(n) for n in num_atoms]
        pbc_np = pbc.detach().cpu().numpy().astype(bool).reshape(len(counts), 3)
        lists = batched_neighbor_lists(
            positions.detach().cpu().double().numpy(), cell.detach().cpu().double().numpy(),
            pbc_np, counts, cutoff, max_neighbors,
        )
        failures: dict[int, str] = {}
        centers, neighbors, start = [], [], 0
        for k, (n, nl) in enumerate(zip(counts, lists, strict=True)):
            overlap = _overlap(nl)
            if overlap:
                failures[k] = overlap
            centers.append(nl.centers + start)
            neighbors.append(nl.neighbors + start)
            start += n
        ids = [str(i) for i in ids] if ids is not None else [str(k) for k in range(len(counts))]
        if failures:
            first = next(iter(failures))
            raise GraphError(
                f"structure {ids[first]!r}: {failures[first]}"
                + (f" (and {len(failures) - 1} more structures)" if len(failures) > 1 else ""),
                failures,
            )
        device = positions.device
        count_t = torch.tensor(counts, device=device)
        return cls(
            atomic_numbers=atomic_numbers.to(device),
            positions=positions,
            cell=cell,
            pbc=torch.as_tensor(pbc_np, device=device),
            edge_index=torch.as_tensor(np.stack([np.concatenate(centers), np.concatenate(neighbors)]), device=device),
            offsets=torch.as_tensor(np.concatenate([nl.offsets for nl in lists]), dtype=positions.dtype, device=device),
            batch=torch.repeat_interleave(torch.arange(len(counts), device=device), count_t),
            num_atoms=count_t,
            cutoff=float(cutoff),
            max_neighbors=max_neighbors,
            ids=ids,
        )

    @classmethod
    def from_structure(
        cls,
        structure: Structure,
        cutoff: float,
        max_neighbors: int | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        structure_id: str | None = None,
    ) -> CrystalGraph:
        """Graph of one pymatgen ``Structure`` (or ``Molecule``)."""
        return cls.from_atoms(
            to_atoms(structure), cutoff, max_neighbors, dtype=dtype, structure_id=structure_id
        )

    @classmethod
    def collate(cls, graphs: Sequence[CrystalGraph]) -> CrystalGraph:
        """Join many graphs (each of one or more crystals) into one batched graph."""
        if not graphs:
            raise ValueError("cannot collate an empty list of graphs")
        if len(graphs) == 1:
            return graphs[0]
        first = graphs[0]
        for g in graphs[1:]:
            if g.cutoff != first.cutoff or g.max_neighbors != first.max_neighbors:
                raise ValueError("graphs built with different cutoffs cannot be batched")
        atom_shift = torch.cumsum(torch.tensor([0] + [g.num_nodes for g in graphs[:-1]]), 0)
        graph_shift = torch.cumsum(torch.tensor([0] + [g.num_graphs for g in graphs[:-1]]), 0)
        return cls(
            atomic_numbers=torch.cat([g.atomic_numbers for g in graphs]),
            positions=torch.cat([g.positions for g in graphs]),
            cell=torch.cat([g.cell for g in graphs]),
            pbc=torch.cat([g.pbc for g in graphs]),
            edge_index=torch.cat([g.edge_index + s for g, s in zip(graphs, atom_shift)], dim=1),
            offsets=torch.cat([g.offsets for g in graphs]),
            batch=torch.cat([g.batch + s for g, s in zip(graphs, graph_shift)]),
            num_atoms=torch.cat([g.num_atoms for g in graphs]),
            cutoff=first.cutoff,
            max_neighbors=first.max_neighbors,
            ids=[i for g in graphs for i in g.ids],
            species_weights=None
            if any(g.species_weights is None for g in graphs)
            else torch.cat([g.species_weights for g in graphs]),
        )

    # ------------------------------------------------------------- helpers
    @property
    def num_nodes(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def num_graphs(self) -> int:
        return int(self.num_atoms.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CrystalGraph:
        """Copy to a device and/or floating dtype (integer tensors keep their dtype)."""

        def mv(t: torch.Tensor) -> torch.Tensor:
            if t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return replace(
            self,
            atomic_numbers=mv(self.atomic_numbers),
            positions=mv(self.positions),
            cell=mv(self.cell),
            pbc=mv(self.pbc),
            edge_index=mv(self.edge_index),
            offsets=mv(self.offsets),
            batch=mv(self.batch),
            num_atoms=mv(self.num_atoms),
            species_weights=None if self.species_weights is None else mv(self.species_weights),
        )

    def element_lookup(self, table: torch.Tensor) -> torch.Tensor:
        """Rows of a per-element ``table`` (indexed by atomic number) for every atom,
        or their ``species_weights``-weighted mean when soft species are set."""
        if self.species_weights is None:
            return table[self.atomic_numbers]
        return self.species_weights.to(table.dtype) @ table[: self.species_weights.shape[1]]

    def edge_vectors(
        self, positions: torch.Tensor | None = None, cell: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Edge vectors ``r_j - r_i + S @ cell`` (Å), differentiable in positions and cell."""
        pos = self.positions if positions is None else positions
        cell = self.cell if cell is None else cell
        i, j = self.edge_index
        if cell.shape[0] == 1:  # one crystal: a plain matrix product
            shift = self.offsets @ cell[0]
        else:
            shift = torch.einsum("ek,ekl->el", self.offsets, cell[self.batch[i]])
        return pos[j] - pos[i] + shift

    def volumes(self, cell: torch.Tensor | None = None) -> torch.Tensor:
        """Cell volumes (Å³), ``(B,)``; zero for crystals not periodic in all three directions."""
        cell = self.cell if cell is None else cell
        vol = torch.linalg.det(cell).abs()
        return torch.where(self.pbc.all(dim=1), vol, torch.zeros_like(vol))


def to_atoms(obj) -> Atoms:
    """An ASE ``Atoms`` from ``Atoms``, pymatgen ``Structure``/``Molecule``."""
    from ase import Atoms

    if isinstance(obj, Atoms):
        return obj
    try:
        from pymatgen.core import IStructure, Molecule
    except ImportError:  # pragma: no cover
        raise TypeError(f"expected ase.Atoms, got {type(obj).__name__}") from None
    from pymatgen.io.ase import AseAtomsAdaptor

    if isinstance(obj, (IStructure, Molecule)):
        if not obj.is_ordered:
            raise GraphError(f"structure {obj.formula!r}: disordered (partial occupancies) structures are not supported")
        return AseAtomsAdaptor.get_atoms(obj)
    hint = f" ({obj!r}: read files with ase.io.read or Structure.from_file first)" if isinstance(obj, (str, os.PathLike)) else ""
    raise TypeError(f"expected ase.Atoms or a pymatgen Structure/Molecule, got {type(obj).__name__}{hint}")

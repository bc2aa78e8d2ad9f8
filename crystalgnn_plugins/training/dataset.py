"""Records -> crystal graphs + target tensors, and batching."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase.stress import voigt_6_to_full_3x3_stress

from crystalgnn_plugins.graph import CrystalGraph, GraphError
from crystalgnn_plugins.models.base import CrystalModel


def _voigt_to_3x3(s) -> np.ndarray:
    """Voigt ``(6,)`` or full ``(3, 3)`` stress -> ``(3, 3)``."""
    s = np.asarray(s, dtype=float)
    return s if s.shape == (3, 3) else voigt_6_to_full_3x3_stress(s)


class GraphDataset(torch.utils.data.Dataset):
    """Graphs built once (with the model's cutoff) and the targets each model needs.

    Args:
        records: :class:`~crystalgnn_plugins.data.Record` objects.
        model: the model to be trained (gives cutoff, neighbour cap, dtype).
        keys: target keys: a property name, or any of ``energy``, ``forces``,
            ``stress``, ``energies`` (per-atom) for an energy model. Missing
            forces/stress/per-atom energies are masked.
    """

    def __init__(self, records: Sequence[Any], model: CrystalModel, keys: Sequence[str]):
        dtype = next(model.parameters()).dtype
        self.keys = list(keys)
        self.items: list[tuple[CrystalGraph, dict[str, torch.Tensor]]] = []
        for rec in records:
            model.check_elements(rec.atoms.numbers, f"{rec.id} ({rec.source})")
            try:
                graph = CrystalGraph.from_atoms(
                    rec.atoms, model.cutoff, model.max_neighbors, dtype=dtype, structure_id=rec.id
                )
            except GraphError as exc:
                raise GraphError(f"{rec.source}: {exc}") from None
            self.items.append((graph, self._targets(rec, dtype)))

    def _targets(self, rec, dtype) -> dict[str, torch.Tensor]:
        n = len(rec.atoms)
        out: dict[str, torch.Tensor] = {"num_atoms": torch.tensor([n])}
        for key in self.keys:
            value = rec.targets.get(key)
            if key == "forces":
                ok = value is not None
                arr = np.asarray(value, dtype=float) if ok else np.zeros((n, 3))
                if ok and arr.shape != (n, 3):
                    raise ValueError(f"{rec.source}: record {rec.id!r}: forces have shape {arr.shape}, expected ({n}, 3)")
                out["forces"] = torch.tensor(arr, dtype=dtype)
                out["forces_mask"] = torch.full((n,), ok)
            elif key == "energies":
                ok = value is not None
                arr = np.asarray(value, dtype=float) if ok else np.zeros(n)
                if ok and arr.shape != (n,):
                    raise ValueError(f"{rec.source}: record {rec.id!r}: per-atom energies have shape {arr.shape}, expected ({n},)")
                out["energies"] = torch.tensor(arr, dtype=dtype)
                out["energies_mask"] = torch.full((n,), ok)
            elif key == "stress":
                ok = value is not None
                arr = _voigt_to_3x3(value) if ok else np.zeros((3, 3))
                out["stress"] = torch.tensor(arr, dtype=dtype).unsqueeze(0)
                out["stress_mask"] = torch.tensor([ok])
            else:
                if value is None:
                    raise ValueError(
                        f"{rec.source}: record {rec.id!r} has no {key!r} label "
                        f"(it has: {', '.join(sorted(rec.targets)) or 'none'})"
                    )
                out[key] = torch.tensor([float(value)], dtype=dtype)
        return out

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def collate(items) -> tuple[CrystalGraph, dict[str, torch.Tensor]]:
    """Batch ``(graph, targets)`` pairs into one graph and concatenated targets."""
    graphs, targets = zip(*items)
    batch = {k: torch.cat([t[k] for t in targets]) for k in targets[0]}
    return CrystalGraph.collate(list(graphs)), batch

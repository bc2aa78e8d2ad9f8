"""``GenerateStructuresTransformation``: crystal structure prediction as a
one-to-many pymatgen transformation."""

from __future__ import annotations

import math
from typing import Any

from pymatgen.transformations.transformation_abc import AbstractTransformation

__all__ = ["GenerateStructuresTransformation"]


class GenerateStructuresTransformation(AbstractTransformation):
    """Propose crystal structures for the composition of the input structure.

    ``apply_transformation(structure)`` returns one generated ``Structure`` of the
    same composition; with ``return_ranked_list=k`` it returns ``k`` candidates
    as ``[{"structure": s, "energy": e, "energy_per_atom": e / len(s)}, ...]``, as
    pymatgen's ``EnumerateStructureTransformation`` does: ``"energy"`` is the total
    energy of the cell (eV) and the list is sorted by energy per atom (eV/atom),
    lowest first; both from the energy model after relaxation (``None`` without
    ``relax``, in the order generated).

    Args:
        model: generator (instance, directory or shipped name; ``None``: default).
        relax: relax the candidates with the energy model.
        seed: makes the proposals reproducible.
        source_kwargs: further arguments of
            :class:`~crystalgnn_plugins.generation.CrystalStructureSource`.
    """

    def __init__(self, model: Any = None, relax: bool = True, seed: int | None = None, **source_kwargs: Any):
        self.model, self.relax, self.seed, self.source_kwargs = model, bool(relax), seed, source_kwargs
        self.kwargs = source_kwargs  # what MSONable.as_dict records for **kwargs
        self._source = None

    @property
    def source(self):
        if self._source is None:
            from crystalgnn_plugins.generation.source import CrystalStructureSource

            self._source = CrystalStructureSource(self.model, **self.source_kwargs)
        return self._source

    @property
    def is_one_to_many(self) -> bool:
        return True

    @property
    def inverse(self) -> None:
        return None

    def apply_transformation(self, structure, return_ranked_list: bool | int = False):
        n = 1 if return_ranked_list is False else (5 if return_ranked_list is True else int(return_ranked_list))
        new = self.source.get_structures(n, composition=structure.composition, relax=self.relax, seed=self.seed)
        if return_ranked_list is False:
            return new[0]

        def entry(s) -> dict[str, Any]:
            relaxation = s.properties["generation"].get("relaxation", {})
            return {"structure": s, "energy": relaxation.get("energy_eV"),  # eV, total
                    "energy_per_atom": relaxation.get("energy_per_atom_eV")}  # eV/atom

        def rank(d: dict[str, Any]) -> float:
            e = d["energy_per_atom"]
            return float("inf") if e is None or math.isnan(e) else e  # unrelaxed and failed ones last

        return sorted((entry(s) for s in new), key=rank)

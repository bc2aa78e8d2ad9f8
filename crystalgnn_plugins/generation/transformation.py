"""``GenerateStructuresTransformation``: crystal structure prediction as a
one-to-many pymatgen transformation."""

from __future__ import annotations

from typing import Any

from pymatgen.transformations.transformation_abc import AbstractTransformation

__all__ = ["GenerateStructuresTransformation"]


class GenerateStructuresTransformation(AbstractTransformation):
    """Propose crystal structures for the composition of the input structure.

    ``apply_transformation(structure)`` returns one generated ``Structure`` of the
    same composition; with ``return_ranked_list=k`` it returns ``k`` candidates
    as ``[{"structure": s, "energy": e}, ...]`` sorted by energy per atom (eV/atom,
    from the energy model after relaxation; ``None`` without ``relax``).

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

        def energy(s):
            return s.properties["generation"].get("relaxation", {}).get("energy_per_atom_eV")

        ranked = [{"structure": s, "energy": energy(s)} for s in new]
        ranked.sort(key=lambda d: float("inf") if d["energy"] is None else d["energy"])
        return ranked

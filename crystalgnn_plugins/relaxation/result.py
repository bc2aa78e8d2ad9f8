"""The outcome of relaxing one structure, and the errors / warnings of the relaxation API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["NotConvergedWarning", "RelaxResult", "RelaxationError", "SkippedStructureWarning"]


class RelaxationError(ValueError):
    """A structure could not be relaxed (unknown element, overlapping atoms,
    non-periodic cell with ``relax_cell=True``, non-finite energies, ...).

    The message names the structure's position in the input and its id.
    ``index`` and ``structure_id`` carry them too.
    """

    def __init__(self, message: str, index: int | None = None, structure_id: str | None = None):
        super().__init__(message)
        self.index = index
        self.structure_id = structure_id


class NotConvergedWarning(UserWarning):
    """Some structures did not reach ``fmax`` within ``steps`` optimizer steps."""


class SkippedStructureWarning(UserWarning):
    """With ``on_error="skip"``, some structures could not be relaxed (their results carry ``error``)."""


@dataclass(eq=False)
class RelaxResult:
    """One relaxed structure.

    Attributes:
        structure: the relaxed structure, of the input's type (ASE ``Atoms`` with a
            ``SinglePointCalculator`` holding the final energy / forces / stress,
            or a pymatgen ``Structure``/``Molecule``). Always a new object.
        energy: final total energy, eV.
        energy_per_atom: ``energy / len(structure)``, eV/atom.
        converged: ``residual < fmax`` was reached within ``steps`` steps.
        steps: optimizer steps taken (force evaluations = ``steps + 1``).
        max_force: largest atomic force norm at the end, eV/Å.
        residual: the convergence measure at the end, eV/Å: the largest row norm
            of the optimizer's generalised forces (atomic forces in the reference
            frame and, with cell relaxation, the three rows of the
            ``FrechetCellFilter`` cell force); ``converged`` is ``residual < fmax``.
        stress: final stress, eV/Å³, Voigt ``xx, yy, zz, yz, xz, xy`` (ASE sign:
            negative under compression); NaN for cells not periodic in 3D.
        forces: final atomic forces ``(N, 3)``, eV/Å.
        id: the structure's identifier.
        index: position in the input list.
        initial_energy: energy of the input structure, eV.
        trajectory: with ``trajectory=True``, the energies (eV) at every force
            evaluation, ``steps + 1`` values, the first the input's; else ``None``.
        error: with ``on_error="skip"``, why this structure failed (then
            ``structure`` is an unrelaxed copy of the input, energies are NaN and
            ``converged`` is False); ``None`` on success.
    """

    structure: Any
    energy: float
    energy_per_atom: float
    converged: bool
    steps: int
    max_force: float
    residual: float
    stress: np.ndarray
    forces: np.ndarray
    id: str
    index: int
    initial_energy: float = float("nan")
    trajectory: np.ndarray | None = None
    error: str | None = field(default=None)

    @property
    def ok(self) -> bool:
        """No error (the structure may still be unconverged)."""
        return self.error is None

    def summary(self) -> dict[str, Any]:
        """JSON-friendly scalars: id, index, converged, steps, energies, forces, error."""
        return {
            "id": self.id,
            "index": self.index,
            "converged": self.converged,
            "steps": self.steps,
            "energy": self.energy,
            "energy_per_atom": self.energy_per_atom,
            "max_force": self.max_force,
            "residual": self.residual,
            "error": self.error,
        }

    def __repr__(self) -> str:
        state = f"error={self.error!r}" if self.error else (
            f"converged={self.converged}, steps={self.steps}, "
            f"energy_per_atom={self.energy_per_atom:.5f} eV, residual={self.residual:.3g} eV/Å"
        )
        return f"RelaxResult(id={self.id!r}, {state})"

"""What a relaxation driver returns for one structure, before conversion to the input's type."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class Outcome:
    """Final state of one relaxation, in ASE units (Å, eV, eV/Å, eV/Å³ Voigt)."""

    positions: np.ndarray
    cell: np.ndarray
    energy: float
    forces: np.ndarray
    stress: np.ndarray
    converged: bool
    steps: int
    residual: float
    initial_energy: float
    trajectory: list[float] | None = None
    error: str | None = None

    @property
    def max_force(self) -> float:
        if self.forces.size == 0:
            return float("nan")
        return float(np.linalg.norm(self.forces, axis=1).max())


def failed(atoms, error: str) -> Outcome:
    """The outcome of a structure that could not be relaxed (``on_error="skip"``)."""
    nan = float("nan")
    return Outcome(
        positions=np.array(atoms.positions, dtype=float),
        cell=np.array(atoms.cell.array, dtype=float),
        energy=nan,
        forces=np.full((len(atoms), 3), nan),
        stress=np.full(6, nan),
        converged=False,
        steps=0,
        residual=nan,
        initial_energy=nan,
        error=error,
    )

"""One-by-one relaxation with ASE: ``FIRE`` on a ``FrechetCellFilter`` (or on the
positions only) driven by a :class:`~crystalgnn_plugins.calculators.GNNCalculator`
-- the matbench-discovery protocol."""

from __future__ import annotations

import numpy as np

from crystalgnn_plugins.relaxation._outcome import Outcome

__all__ = ["relax_atoms_ase"]


def relax_atoms_ase(
    atoms,
    calculator,
    *,
    fmax: float = 0.05,
    steps: int = 500,
    relax_cell: bool = True,
    pressure: float = 0.0,
    trajectory: bool = False,
) -> Outcome:
    """Relax ``atoms`` **in place** with ASE's ``FIRE`` (default parameters).

    With ``relax_cell`` the optimizer runs on ``FrechetCellFilter(atoms)`` (cell
    degrees of freedom: ``len(atoms) * logm(F)`` of the deformation gradient
    ``F``), so ``residual`` includes the three cell rows; otherwise only the
    positions move. ``pressure`` (GPa) is the filter's ``scalar_pressure``.
    Converged means ``residual < fmax`` (eV/Å), checked before
    each of at most ``steps`` steps and after the last.

    Exceptions of the calculator (unknown element, overlapping atoms) propagate.
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from ase.units import GPa

    atoms.calc = calculator
    target = FrechetCellFilter(atoms, scalar_pressure=pressure * GPa) if relax_cell else atoms
    initial_energy = float(atoms.get_potential_energy())
    opt = FIRE(target, logfile=None)
    energies: list[float] | None = [] if trajectory else None
    if energies is not None:
        opt.attach(lambda: energies.append(float(atoms.get_potential_energy())))
    converged = bool(opt.run(fmax=fmax, steps=steps))
    generalised = np.asarray(target.get_forces()).reshape(-1, 3)
    residual = float(np.linalg.norm(generalised, axis=1).max())
    energy = float(atoms.get_potential_energy())
    forces = np.array(atoms.get_forces(), dtype=float)
    if atoms.pbc.all():
        stress = np.array(atoms.get_stress(voigt=True), dtype=float)
    else:
        stress = np.full(6, np.nan)
    if not (np.isfinite(energy) and np.isfinite(forces).all()):
        raise FloatingPointError(f"non-finite energy or forces after {opt.nsteps} steps")
    return Outcome(
        positions=np.array(atoms.positions, dtype=float),
        cell=np.array(atoms.cell.array, dtype=float),
        energy=energy,
        forces=forces,
        stress=stress,
        converged=converged,
        steps=int(opt.nsteps),
        residual=residual,
        initial_energy=initial_energy,
        trajectory=energies,
    )

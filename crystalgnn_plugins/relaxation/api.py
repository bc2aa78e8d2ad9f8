"""``relax()``: relax ASE ``Atoms`` / pymatgen structures with an energy model,
one by one through ASE or many at once with the batched FIRE."""

from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase.calculators.calculator import CalculationFailed

from crystalgnn_plugins.models.base import CrystalModel, evaluating
from crystalgnn_plugins.relaxation._outcome import Outcome, failed
from crystalgnn_plugins.relaxation.result import (
    NotConvergedWarning,
    RelaxationError,
    RelaxResult,
    SkippedStructureWarning,
)

__all__ = ["relax"]

logger = logging.getLogger("crystalgnn_plugins.relaxation")

_ID_KEYS = ("id", "material_id", "name")


def _is_single(obj: Any) -> bool:
    from ase import Atoms

    if isinstance(obj, (str, os.PathLike)):  # a file name is one (wrong) input, not a sequence of them
        return True
    if isinstance(obj, Atoms):
        return True
    try:
        from pymatgen.core import IMolecule, IStructure
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, (IStructure, IMolecule))


def _default_id(obj: Any, index: int) -> str:
    meta = getattr(obj, "info", None)
    if meta is None:
        meta = getattr(obj, "properties", None) or {}
    for key in _ID_KEYS:
        value = meta.get(key)
        if isinstance(value, (str, int, np.integer)) and not isinstance(value, bool):
            return str(value)
    return str(index)


def _where(index: int, sid: str) -> str:
    return f"structure {index}" + (f" (id {sid!r})" if sid != str(index) else "")


def _to_ase(obj: Any):
    from crystalgnn_plugins.graph import to_atoms

    atoms = to_atoms(obj)
    atoms = atoms.copy()  # never touch the caller's object
    atoms.calc = None
    return atoms


def _like_input(original: Any, outcome: Outcome):
    """The relaxed structure as an object of the input's type (a new object)."""
    from ase import Atoms

    if isinstance(original, Atoms):
        out = original.copy()
        out.calc = None
        if outcome.error is not None:
            return out
        # the relaxed cell as it is: a constraint (FixSymmetry) already acted during the relaxation,
        # and adjusting the whole deformation at once can exceed its limits
        out.set_cell(outcome.cell, scale_atoms=False, apply_constraint=False)
        out.positions = outcome.positions
        from ase.calculators.singlepoint import SinglePointCalculator

        results: dict[str, Any] = {"energy": outcome.energy, "free_energy": outcome.energy, "forces": outcome.forces}
        if np.isfinite(outcome.stress).all():
            results["stress"] = outcome.stress
        out.calc = SinglePointCalculator(out, **results)
        return out

    from pymatgen.core import IMolecule, Lattice

    if outcome.error is not None:
        return original.copy() if hasattr(original, "copy") else original
    species = [site.species for site in original]
    common = {
        "site_properties": copy.deepcopy(original.site_properties),
        "labels": list(original.labels),
        "properties": copy.deepcopy(dict(getattr(original, "properties", {}) or {})),
    }
    if isinstance(original, IMolecule):
        return type(original)(
            species, outcome.positions, charge=original.charge,
            spin_multiplicity=original.spin_multiplicity, **common,
        )
    lattice = Lattice(outcome.cell, pbc=original.lattice.pbc)
    return type(original)(
        lattice, species, outcome.positions, charge=getattr(original, "_charge", None),
        coords_are_cartesian=True, **common,
    )


def _result(original: Any, outcome: Outcome, sid: str, index: int) -> RelaxResult:
    n = len(outcome.positions)
    return RelaxResult(
        structure=_like_input(original, outcome),
        energy=outcome.energy,
        energy_per_atom=outcome.energy / n if n else float("nan"),
        converged=outcome.converged,
        steps=outcome.steps,
        max_force=outcome.max_force,
        residual=outcome.residual,
        stress=outcome.stress,
        forces=outcome.forces,
        id=sid,
        index=index,
        initial_energy=outcome.initial_energy,
        trajectory=np.asarray(outcome.trajectory) if outcome.trajectory is not None else None,
        error=outcome.error,
    )


def relax(
    structures_or_atoms: Any,
    model: CrystalModel | str | os.PathLike | None = None,
    *,
    fmax: float = 0.05,
    steps: int = 500,
    relax_cell: bool = True,
    pressure: float = 0.0,
    batched: bool = False,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trajectory: bool = False,
    ids: Sequence[str] | None = None,
    on_error: str = "raise",
) -> list[RelaxResult]:
    """Relax structures to a local minimum of a learned energy model.

    The protocol is matbench-discovery's: FIRE with ASE's default parameters on
    the positions and (``relax_cell=True``) the cell through ASE's
    ``FrechetCellFilter`` parametrisation, until every row of the generalised
    forces (atoms, and the three cell rows) is shorter than ``fmax`` or
    ``steps`` steps have been taken.

    Args:
        structures_or_atoms: one ASE ``Atoms`` or pymatgen ``Structure`` (or
            ``Molecule``, with ``relax_cell=False``), or a sequence of them
            (types may be mixed). Never modified.
        model: an :class:`~crystalgnn_plugins.models.EnergyModel`, a saved-model
            directory or a shipped model name (``None``: the shipped default).
        fmax: convergence threshold, eV/Å.
        steps: maximum number of optimizer steps per structure.
        relax_cell: relax the cell as well as the positions (needs cells periodic
            in all three directions).
        pressure: external hydrostatic pressure, GPa (``relax_cell`` only): the
            cell relaxes to zero generalised force on the enthalpy ``E + PV``
            (ASE's ``FrechetCellFilter(scalar_pressure=...)``). Reported energies
            stay the model's energy ``E``.
        batched: relax many structures at once with the batched FIRE
            (:class:`~crystalgnn_plugins.relaxation.BatchedFIRE`, one model call
            per step for up to ``batch_size`` structures) instead of ASE's
            ``FIRE`` one structure at a time. Same algorithm, same results up to
            round-off. Constraints (``FixAtoms`` ...) need ``batched=False``.
        batch_size: structures relaxed together when ``batched``; finished ones
            are replaced from the queue.
        device: torch device (default: CUDA if available, else CPU).
        dtype: model dtype (default: the model's own); the optimizer state is
            float64 either way.
        trajectory: keep each structure's energy at every force evaluation
            (``RelaxResult.trajectory``).
        ids: identifiers of the structures (default: ``info``/``properties``
            ``"id"``, ``"material_id"`` or ``"name"``, else the index as a string).
        on_error: ``"raise"`` (default): a structure that cannot be relaxed
            (unknown element, overlapping atoms, non-periodic cell with
            ``relax_cell``, non-finite energies) raises :class:`RelaxationError`
            naming its index and id. ``"skip"``: its result has ``error`` set, an
            unrelaxed copy of the input as ``structure``, NaN energies and
            ``converged=False``; a :class:`SkippedStructureWarning` counts them.

    Returns:
        One :class:`RelaxResult` per input, in input order (a list even for a
        single structure). Structures that did not converge have
        ``converged=False`` and a :class:`NotConvergedWarning` summarises them.
    """
    from crystalgnn_plugins.models.energy import EnergyModel
    from crystalgnn_plugins.models.pretrained import resolve_model

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not fmax > 0:
        raise ValueError(f"fmax must be positive, got {fmax}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not np.isfinite(pressure):
        raise ValueError(f"pressure must be a finite number of GPa, got {pressure}")
    if pressure and not relax_cell:
        raise ValueError(f"pressure={pressure} GPa acts on the cell: it needs relax_cell=True")
    inputs = [structures_or_atoms] if _is_single(structures_or_atoms) else list(structures_or_atoms)
    if ids is not None:
        ids = [str(i) for i in ids]
        if len(ids) != len(inputs):
            raise ValueError(f"got {len(ids)} ids for {len(inputs)} structures")
    else:
        ids = [_default_id(obj, k) for k, obj in enumerate(inputs)]

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    energy_model = resolve_model(model, device=torch.device(device), dtype=dtype)
    if not isinstance(energy_model, EnergyModel):
        raise TypeError(
            f"relaxation needs an energy model, got a {type(energy_model).__name__} "
            f"(model_type {energy_model.model_type!r})"
        )

    outcomes: list[Outcome | None] = [None] * len(inputs)

    def fail(index: int, message: str, atoms=None, cause: BaseException | None = None) -> None:
        text = f"{_where(index, ids[index])}: {message}"
        if on_error == "raise":
            raise RelaxationError(text, index, ids[index]) from cause
        outcomes[index] = failed(atoms if atoms is not None else _placeholder(inputs[index]), message)

    # ---- convert and validate up front (cheap checks; overlaps show at the first evaluation)
    atoms_list: list[Any] = [None] * len(inputs)
    for k, obj in enumerate(inputs):
        try:
            atoms = _to_ase(obj)
        except (TypeError, ValueError) as exc:
            fail(k, str(exc), cause=exc)
            continue
        message = None
        if len(atoms) == 0:
            message = "has no atoms"
        elif not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()):
            message = "non-finite positions or cell"
        elif atoms.pbc.all() and abs(atoms.cell.volume) < 1e-6:
            message = f"periodic cell is degenerate: {atoms.cell.array.tolist()}"
        elif relax_cell and not atoms.pbc.all():
            message = (
                f"relax_cell=True needs a cell periodic in 3D (pbc={atoms.pbc.tolist()}); "
                "pass relax_cell=False to relax positions only"
            )
        elif batched and atoms.constraints:
            message = "constraints are not supported by the batched relaxer; use batched=False"
        if message is None:
            try:
                energy_model.check_elements(atoms.numbers, ids[k])
            except ValueError as exc:
                message = str(exc)
        if message is not None:
            fail(k, message, atoms)
            continue
        atoms_list[k] = atoms

    todo = [k for k in range(len(inputs)) if outcomes[k] is None]
    start = time.perf_counter()
    with evaluating(energy_model):  # the caller's model keeps its own train/eval mode
        if batched and todo:
            from crystalgnn_plugins.relaxation.batched_fire import BatchedFIRE

            relaxer = BatchedFIRE(
                energy_model, fmax=fmax, steps=steps, relax_cell=relax_cell, pressure=pressure,
                batch_size=batch_size, trajectory=trajectory, on_error=on_error,
            )
            sub = [atoms_list[k] for k in todo]
            got = relaxer.run(sub, error_handler=lambda j, message: fail(todo[j], message, sub[j]))
            for j, k in enumerate(todo):
                outcomes[k] = got[j]
            logger.debug("batched FIRE timings (s): %s", relaxer.timings)
        elif todo:
            from crystalgnn_plugins.calculators import GNNCalculator
            from crystalgnn_plugins.relaxation.ase_relax import relax_atoms_ase

            calc = GNNCalculator(energy_model, device=device)
            for k in todo:
                atoms = atoms_list[k]
                original = atoms.copy()
                try:
                    outcomes[k] = relax_atoms_ase(
                        atoms, calc, fmax=fmax, steps=steps, relax_cell=relax_cell, pressure=pressure,
                        trajectory=trajectory,
                    )
                except (ValueError, FloatingPointError, CalculationFailed) as exc:
                    fail(k, str(exc), original, cause=exc)
                finally:
                    atoms.calc = None
    elapsed = time.perf_counter() - start

    results = [_result(obj, out, ids[k], k) for k, (obj, out) in enumerate(zip(inputs, outcomes, strict=True))]
    _report(results, fmax, steps, elapsed)
    return results


def _placeholder(obj: Any):
    """An empty ``Atoms`` standing in for an input that could not be converted."""
    from ase import Atoms

    return obj if isinstance(obj, Atoms) else Atoms()


def _report(results: list[RelaxResult], fmax: float, steps: int, elapsed: float) -> None:
    errors = [r for r in results if r.error is not None]
    unconverged = [r for r in results if r.error is None and not r.converged]
    n_ok = len(results) - len(errors)
    logger.info(
        "relaxed %d structures in %.2f s: %d converged, %d not converged, %d failed",
        len(results), elapsed, n_ok - len(unconverged), len(unconverged), len(errors),
    )
    if unconverged:
        shown = ", ".join(repr(r.id) for r in unconverged[:10]) + (", ..." if len(unconverged) > 10 else "")
        warnings.warn(
            f"{len(unconverged)} of {n_ok} structures did not converge to fmax={fmax} eV/Å "
            f"within {steps} steps: {shown}",
            NotConvergedWarning,
            stacklevel=3,
        )
    if errors:
        shown = "; ".join(f"{r.id!r}: {r.error}" for r in errors[:5]) + ("; ..." if len(errors) > 5 else "")
        warnings.warn(
            f"{len(errors)} of {len(results)} structures failed and were skipped: {shown}",
            SkippedStructureWarning,
            stacklevel=3,
        )

"""The common record type every data reader produces, and its validation helpers.

A :class:`Record` is one structure with its targets. Units follow ASE: energies
in eV, forces in eV/Å, stress in eV/Å³ (Voigt order ``xx, yy, zz, yz, xz, xy``,
ASE sign convention: positive = tensile). The private ``_...`` helpers below
are shared by the readers of :mod:`crystalgnn_plugins.data`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

__all__ = ["DataError", "Record"]


class DataError(ValueError):
    """A data file or one of its records is malformed.

    The message names the file, the row / id of the record (when the problem
    belongs to one record) and what is wrong.
    """


@dataclass(eq=False)
class Record:
    """One structure with its targets, as returned by every reader.

    Attributes:
        id: stable identifier (``material_id``, CIF file stem, ASE db row id or
            ``name``, extended-XYZ frame index, ...).
        atoms: the structure (periodic or not), without a calculator attached.
        targets: ``"energy"`` total energy (eV, float); ``"forces"`` (N, 3)
            float64 array (eV/Å); ``"stress"`` (6,) float64 Voigt array
            ``xx, yy, zz, yz, xz, xy`` (eV/Å³, ASE sign convention); ``"energies"``
            (N,) float64 array of per-atom energies (eV, e.g. a teacher potential's
            site energies; they sum to ``"energy"``); any other key is a scalar
            property as a Python float in the units of its source.
        source: where the record came from, e.g. ``"dev.csv:row 12"``; used in
            error messages.
    """

    id: str
    atoms: Atoms
    targets: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __repr__(self) -> str:
        keys = ", ".join(self.targets)
        formula = self.atoms.get_chemical_formula()
        return f"Record(id={self.id!r}, atoms={formula}, targets=[{keys}], source={self.source!r})"


# ------------------------------------------------------------------ helpers
def _record_error(source: str, record_id: str | None, problem: str) -> DataError:
    """A :class:`DataError` ``"<source> (id '<id>'): <problem>"``."""
    where = source if record_id is None else f"{source} (id {record_id!r})"
    return DataError(f"{where}: {problem}")


def _is_number(value: object) -> bool:
    """True for real numbers (Python or numpy, incl. 0-d arrays), False for bools."""
    if isinstance(value, np.ndarray):
        if value.ndim != 0 or value.dtype == bool:
            return False
        value = value.item()
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _scalar(value: object, *, name: str, source: str, record_id: str | None) -> float:
    """``value`` as a finite float; strings are parsed.

    Raises:
        DataError: not a number, a bool, NaN or infinite.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            result = float(text)
        except ValueError:
            shown = repr(value) if text else "an empty value"
            raise _record_error(
                source, record_id, f"target {name!r} is not a number: {shown}"
            ) from None
    elif _is_number(value):
        result = float(value)  # type: ignore[arg-type]
    else:
        raise _record_error(
            source,
            record_id,
            f"target {name!r} is not a number: {value!r} ({type(value).__name__})",
        )
    if not math.isfinite(result):
        raise _record_error(source, record_id, f"target {name!r} is {result} (not finite)")
    return result


def _forces(value: object, natoms: int, *, source: str, record_id: str | None) -> np.ndarray:
    """``value`` as a finite (natoms, 3) float64 array (eV/Å)."""
    arr = np.array(value, dtype=np.float64)
    if arr.shape != (natoms, 3):
        raise _record_error(
            source, record_id, f"forces have shape {arr.shape}, expected ({natoms}, 3)"
        )
    if not np.isfinite(arr).all():
        raise _record_error(source, record_id, "forces contain NaN or infinite values")
    return arr


def _site_energies(value: object, natoms: int, *, source: str, record_id: str | None) -> np.ndarray:
    """``value`` as a finite (natoms,) float64 array of per-atom energies (eV)."""
    arr = np.array(value, dtype=np.float64)
    if arr.shape != (natoms,):
        raise _record_error(
            source, record_id, f"per-atom energies have shape {arr.shape}, expected ({natoms},)"
        )
    if not np.isfinite(arr).all():
        raise _record_error(source, record_id, "per-atom energies contain NaN or infinite values")
    return arr


def _stress(value: object, *, source: str, record_id: str | None) -> np.ndarray:
    """``value`` (Voigt (6,), full (3, 3) or flat (9,)) as a finite (6,) Voigt array (eV/Å³).

    A full tensor is symmetrised as in :func:`ase.stress.full_3x3_to_voigt_6_stress`.
    """
    arr = np.array(value, dtype=np.float64)
    if arr.shape == (9,):
        arr = arr.reshape(3, 3)
    if arr.shape == (3, 3):
        arr = np.array(
            [
                arr[0, 0],
                arr[1, 1],
                arr[2, 2],
                (arr[1, 2] + arr[2, 1]) / 2,
                (arr[0, 2] + arr[2, 0]) / 2,
                (arr[0, 1] + arr[1, 0]) / 2,
            ]
        )
    if arr.shape != (6,):
        raise _record_error(
            source, record_id, f"stress has shape {arr.shape}, expected (6,), (3, 3) or (9,)"
        )
    if not np.isfinite(arr).all():
        raise _record_error(source, record_id, "stress contains NaN or infinite values")
    return arr


def _target_value(name: str, value: object, natoms: int, *, source: str, record_id: str) -> Any:
    """A target in its canonical form: ``forces`` (N, 3), ``stress`` (6,), ``energies``
    (N,), else a float."""
    if name == "forces":
        return _forces(value, natoms, source=source, record_id=record_id)
    if name == "energies":
        return _site_energies(value, natoms, source=source, record_id=record_id)
    if name == "stress":
        return _stress(value, source=source, record_id=record_id)
    return _scalar(value, name=name, source=source, record_id=record_id)


def _target_names(targets: str | Sequence[str] | None) -> list[str] | None:
    """Normalise a ``targets`` argument: a single name becomes a one-element list."""
    if targets is None:
        return None
    names = [targets] if isinstance(targets, str) else list(targets)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"target names must be non-empty strings, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate target names in {names}")
    return names


def _claim_id(seen: dict[str, str], record_id: str, source: str, where: str) -> None:
    """Remember ``record_id`` (from ``source``) in ``seen``; raise if it was already there.

    Raises:
        DataError: duplicate id, naming both sources.
    """
    if record_id in seen:
        raise DataError(
            f"{where}: duplicate id {record_id!r} ({seen[record_id]} and {source}); "
            "ids must be unique"
        )
    seen[record_id] = source

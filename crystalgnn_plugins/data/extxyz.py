"""Extended XYZ: frames with calculator results (energy, forces, stress) and ``info`` entries."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crystalgnn_plugins.data.records import (
    DataError,
    Record,
    _claim_id,
    _is_number,
    _record_error,
    _target_names,
    _target_value,
)

__all__ = ["read_extxyz"]

#: Calculator results read from a frame, in this order.
CALC_TARGETS = ("energy", "forces", "stress", "energies")


def _parse_index(index: int | slice | str) -> int | slice:
    """``3``, ``"3"``, ``":"``, ``"-5:"``, ``"::2"`` -> int or slice (Python semantics)."""
    if isinstance(index, (int, slice)) and not isinstance(index, bool):
        return index
    if isinstance(index, str):
        text = index.strip()
        try:
            if ":" not in text:
                return int(text)
            parts = text.split(":")
            if len(parts) <= 3:
                return slice(*(int(p) if p.strip() else None for p in parts))
        except ValueError:
            pass
    raise ValueError(
        f"invalid frame index {index!r}; use an int or a slice string like ':' or '10:20'"
    )


def _raw_targets(atoms: Any, exclude: str | None, *, source: str, record_id: str) -> dict[str, Any]:
    """Unvalidated targets of a frame: calculator results, ``virial`` as stress, numeric info."""
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    found = {name: results[name] for name in CALC_TARGETS if results.get(name) is not None}
    virial = atoms.info.get("virial")
    if "stress" not in found and virial is not None and atoms.cell.rank == 3:
        # virial W = -V * sigma (GAP / MACE convention); sigma in eV/Å^3
        try:
            found["stress"] = -np.asarray(virial, dtype=np.float64) / atoms.get_volume()
        except (TypeError, ValueError):
            raise _record_error(source, record_id, f"virial is not numeric: {virial!r}") from None
    for key, value in atoms.info.items():
        if key != exclude and key not in found and _is_number(value):
            found[key] = value
    return found


def read_extxyz(
    path: str | os.PathLike[str],
    index: int | slice | str = ":",
    targets: str | Sequence[str] | None = None,
    *,
    id_keys: Sequence[str] = ("id", "name"),
) -> list[Record]:
    """Read frames of an extended XYZ file with :func:`ase.io.read`.

    Targets are the results ASE attaches as a ``SinglePointCalculator`` --
    ``energy`` (eV), ``forces`` (N, 3) (eV/Å), ``stress`` (eV/Å³; a full 3x3
    tensor is converted to Voigt ``xx, yy, zz, yz, xz, xy``; without a stress,
    a 3x3 ``virial`` (eV) in ``info`` gives ``stress = -virial / volume``;
    ``energies`` (N,) per-atom energies (eV)) -- and the numeric (non-bool) ``atoms.info`` entries as floats.

    Args:
        path: the ``.xyz`` / ``.extxyz`` file.
        index: frames to read, an int or a slice string (``":"``, ``"-10:"``, ``"::2"``).
        targets: names to read; every frame must have each of them. Default:
            whatever each frame has.
        id_keys: ``info`` entries tried in order for the record id (the first
            present wins; it is not a target); else the frame index in the file.

    Returns:
        One :class:`Record` per selected frame; ``source`` is
        ``"<path>:frame <i>"`` (0-based); ``atoms`` keeps its ``info`` but has no
        calculator attached.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: the file cannot be parsed, a requested target is missing in
            a frame (the message lists the frame's targets), malformed or
            non-finite values, or duplicate ids.
    """
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"extended XYZ file not found: {path}")
    selector = _parse_index(index)
    names = _target_names(targets)
    try:
        frames = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as exc:
        raise DataError(f"{path}: cannot read extended XYZ ({type(exc).__name__}: {exc})") from exc
    positions = list(range(len(frames)))
    if isinstance(selector, int):
        try:
            chosen = [positions[selector]]
        except IndexError:
            raise DataError(
                f"{path}: frame {selector} out of range ({len(frames)} frames)"
            ) from None
    else:
        chosen = positions[selector]

    records = []
    seen: dict[str, str] = {}
    for i in chosen:
        atoms = frames[i]
        source = f"{path}:frame {i}"
        id_key = next((k for k in id_keys if k in atoms.info), None)
        record_id = str(atoms.info[id_key]).strip() if id_key is not None else str(i)
        if not record_id:
            raise _record_error(source, None, f"empty id in info key {id_key!r}")
        _claim_id(seen, record_id, source, str(path))

        available = _raw_targets(atoms, exclude=id_key, source=source, record_id=record_id)
        wanted = list(available) if names is None else names
        missing = [n for n in wanted if n not in available]
        if missing:
            raise _record_error(
                source, record_id, f"target(s) {missing} not found; frame has {list(available)}"
            )
        values = {
            n: _target_value(n, available[n], len(atoms), source=source, record_id=record_id)
            for n in wanted
        }
        atoms.calc = None
        records.append(Record(id=record_id, atoms=atoms, targets=values, source=source))
    return records

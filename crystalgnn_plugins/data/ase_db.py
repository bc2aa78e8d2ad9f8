"""ASE database (``ase.db``, SQLite ``.db`` or JSON): stored calculator results and key-value pairs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crystalgnn_plugins.data.records import (
    DataError,
    Record,
    _claim_id,
    _is_number,
    _record_error,
    _target_names,
    _target_value,
)

__all__ = ["read_ase_db"]

#: Calculator results read from a row, in this order.
CALC_TARGETS = ("energy", "forces", "stress")


def _raw_targets(row: Any, exclude: str | None) -> dict[str, Any]:
    """Unvalidated targets a row offers: stored energy / forces / stress, per-atom
    energies (``data["energies"]``), numeric key-value pairs."""
    found = {name: row.get(name) for name in CALC_TARGETS if row.get(name) is not None}
    energies = (row.get("data") or {}).get("energies")
    if energies is not None:
        found["energies"] = energies
    for key, value in row.key_value_pairs.items():
        if key != exclude and _is_number(value):
            found[key] = value
    return found


def read_ase_db(
    path: str | os.PathLike[str],
    selection: Any = None,
    targets: str | Sequence[str] | None = None,
    *,
    optional: Sequence[str] = (),
    id_keys: Sequence[str] = ("id", "name"),
) -> list[Record]:
    """Read the rows of an ASE database.

    Targets are the calculator results stored with each row -- ``energy`` (eV),
    ``forces`` (N, 3) (eV/Å), ``stress`` (eV/Å³, stored by ASE as Voigt
    ``xx, yy, zz, yz, xz, xy``; a full 3x3 tensor is converted) --, per-atom
    energies ``energies`` (N,) (eV) stored in the row's ``data["energies"]`` (ASE's
    SQLite backend keeps no per-atom energies among the calculator results), and
    the numeric (non-bool) ``key_value_pairs`` as floats.

    Args:
        path: the database file (``.db`` SQLite, or ``.json``).
        selection: an ``ase.db`` selection (query string such as ``"Cu,natoms<10"``,
            row id, or list of ``(key, op, value)``); default all rows.
        targets: names to read (calculator results or key names); every row
            must have each of them. Default: whatever each row has, so records
            from different rows may have different targets.
        optional: with ``targets``, names also read where a row has them (e.g.
            ``["energies"]``: per-atom energies stored for only some rows).
        id_keys: key-value pairs tried in order for the record id (the first
            present wins; it is not a target); else ``str(row.id)``. ``"id"`` is
            reserved by ``ase.db``, so in practice this is ``"name"``.

    Returns:
        One :class:`Record` per selected row in database order; ``source`` is
        ``"<path>:id <row.id>"``; ``atoms`` has no calculator attached.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: the database cannot be opened or queried, a requested target
            is missing in a row (the message lists the row's targets), malformed
            or non-finite values, or duplicate ids.
    """
    import ase.db

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ASE database not found: {path}")
    names = _target_names(targets)

    try:
        db = ase.db.connect(str(path))
        rows = list(db.select() if selection is None else db.select(selection))
    except Exception as exc:
        raise DataError(f"{path}: cannot read ASE database ({type(exc).__name__}: {exc})") from exc

    records = []
    seen: dict[str, str] = {}
    for row in rows:
        source = f"{path}:id {row.id}"
        kvp = row.key_value_pairs
        id_key = next((k for k in id_keys if k in kvp), None)
        record_id = str(kvp[id_key]).strip() if id_key is not None else str(row.id)
        if not record_id:
            raise _record_error(source, None, f"empty id in key {id_key!r}")
        _claim_id(seen, record_id, source, str(path))

        atoms = row.toatoms()
        atoms.calc = None
        available = _raw_targets(row, exclude=id_key)
        wanted = list(available) if names is None else names + [n for n in optional if n in available and n not in names]
        missing = [n for n in wanted if n not in available]
        if missing:
            non_numeric = [n for n in missing if n in kvp]
            why = f" (not numeric: {non_numeric})" if non_numeric else ""
            raise _record_error(
                source, record_id, f"target(s) {missing} not found{why}; row has {list(available)}"
            )
        values = {
            n: _target_value(n, available[n], len(atoms), source=source, record_id=record_id)
            for n in wanted
        }
        records.append(Record(id=record_id, atoms=atoms, targets=values, source=source))
    return records

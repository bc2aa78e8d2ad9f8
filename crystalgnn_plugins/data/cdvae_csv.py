"""CDVAE CSV: one row per structure, a ``cif`` column and property columns."""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from crystalgnn_plugins.data.cif_folder import _atoms_from_cif
from crystalgnn_plugins.data.records import (
    DataError,
    Record,
    _claim_id,
    _record_error,
    _scalar,
    _target_names,
)

__all__ = ["read_cdvae_csv"]

CIF_COLUMN = "cif"
ID_COLUMN = "material_id"


@contextlib.contextmanager
def _large_csv_fields(limit: int = 2**31 - 1) -> Iterator[None]:
    """Temporarily lift :mod:`csv`'s 128 KiB field limit (large CIF strings)."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, limit))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _is_index_column(name: str) -> bool:
    """The unnamed index column pandas writes (header ``""`` or ``"Unnamed: 0"``)."""
    return name.strip() == "" or name.startswith("Unnamed:")


def _is_numeric_column(rows: list[list[str]], col: int) -> bool:
    """True if every non-empty cell of column ``col`` parses as a float (and one exists)."""
    seen = False
    for row in rows:
        text = row[col].strip()
        if not text:
            continue
        try:
            float(text)
        except ValueError:
            return False
        seen = True
    return seen


def read_cdvae_csv(
    path: str | os.PathLike[str],
    targets: str | Sequence[str] | None = None,
    *,
    id_column: str | None = None,
) -> list[Record]:
    """Read a CDVAE-format CSV file (e.g. ``perov_5``, ``carbon_24``, ``mp_20``).

    Columns: ``cif`` (a CIF string, pymatgen-written, usually P1), an id column
    and property columns. Structures are parsed with pymatgen
    (``Structure.from_str(cif, fmt="cif")``) and converted with
    ``AseAtomsAdaptor``: sites come in pymatgen's order (sorted by
    electronegativity), fractional coordinates wrapped into [0, 1).

    Args:
        path: the CSV file.
        targets: property columns to read as float targets (a single name is
            accepted). Default: every numeric column except the id and index
            columns. Units are those of the dataset (e.g. ``heat_all`` eV per
            5-atom cell, ``energy_per_atom`` eV/atom).
        id_column: column holding the record ids. Default: ``material_id`` if
            present, else the unnamed first (index) column, else the row number.

    Returns:
        One :class:`Record` per row, in file order; ``source`` is
        ``"<path>:row <i>"`` with ``i`` the 0-based data row (header excluded,
        as ``pandas.read_csv(path).iloc[i]``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: no ``cif`` column, a requested target or id column missing
            (the message lists the columns), a ragged row, an empty or
            duplicate id, a non-numeric / empty / NaN / infinite target value
            (naming row, id and column), or an unparsable / disordered CIF.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CDVAE CSV file not found: {path}")
    names = _target_names(targets)

    with _large_csv_fields(), path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        rows = [row for row in reader if row]
    if not header:
        raise DataError(f"{path}: empty file (expected a header row with a {CIF_COLUMN!r} column)")
    columns = {}
    for col, name in enumerate(header):
        if name in columns:
            raise DataError(f"{path}: duplicate column {name!r} in header {header}")
        columns[name] = col
    shown = [c for c in header if not _is_index_column(c)]

    if CIF_COLUMN not in columns:
        raise DataError(f"{path}: no {CIF_COLUMN!r} column; columns: {shown}")
    index_col = 0 if _is_index_column(header[0]) else None
    if id_column is not None:
        if id_column not in columns:
            raise DataError(f"{path}: id column {id_column!r} not found; columns: {shown}")
        id_col: int | None = columns[id_column]
    elif ID_COLUMN in columns:
        id_col = columns[ID_COLUMN]
    else:
        id_col = index_col

    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise DataError(
                f"{path}:row {i}: {len(row)} fields, expected {len(header)} (columns {header})"
            )

    if names is None:
        skip = {columns[CIF_COLUMN], id_col, index_col}
        names = [
            name
            for col, name in enumerate(header)
            if col not in skip and _is_numeric_column(rows, col)
        ]
    else:
        missing = [name for name in names if name not in columns]
        if missing:
            raise DataError(f"{path}: target column(s) {missing} not found; columns: {shown}")
    target_cols = [(name, columns[name]) for name in names]
    cif_col = columns[CIF_COLUMN]

    # cheap checks (ids, target values) for all rows before parsing any CIF
    parsed: list[tuple[str, str, dict[str, float]]] = []
    seen: dict[str, str] = {}
    for i, row in enumerate(rows):
        source = f"{path}:row {i}"
        record_id = row[id_col].strip() if id_col is not None else str(i)
        if not record_id:
            raise _record_error(source, None, f"empty id in column {header[id_col]!r}")
        _claim_id(seen, record_id, source, str(path))
        values = {
            name: _scalar(row[col], name=name, source=source, record_id=record_id)
            for name, col in target_cols
        }
        parsed.append((source, record_id, values))

    records = []
    for row, (source, record_id, values) in zip(rows, parsed, strict=True):
        atoms = _atoms_from_cif(row[cif_col], source=source, record_id=record_id)
        records.append(Record(id=record_id, atoms=atoms, targets=values, source=source))
    return records

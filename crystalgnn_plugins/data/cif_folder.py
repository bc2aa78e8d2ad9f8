"""CGCNN-style folder: ``id_prop.csv`` plus one ``<id>.cif`` per structure.

Also home of :func:`_atoms_from_cif`, the CIF parser shared with the CDVAE CSV
reader (pymatgen ``Structure.from_str`` + ``AseAtomsAdaptor``).
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crystalgnn_plugins.data.records import (
    DataError,
    Record,
    _claim_id,
    _record_error,
    _scalar,
    _target_names,
)

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

__all__ = ["read_cif_folder"]

ID_PROP = "id_prop.csv"


def _atoms_from_cif(text: str, *, source: str, record_id: str | None) -> Atoms:
    """Parse one CIF string with pymatgen into periodic :class:`ase.Atoms`.

    Same result as ``Structure.from_str(text, fmt="cif")`` followed by
    ``AseAtomsAdaptor.get_atoms``.

    Sites come in pymatgen's order (sorted by electronegativity, file order
    within an element), fractional coordinates wrapped into [0, 1).
    pymatgen's parser warnings (e.g. coordinates rounded to ideal values) are
    silenced unless parsing fails, in which case they are part of the error.

    Raises:
        DataError: empty or unparsable CIF, or a disordered structure.
    """
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifParser

    if not text or not text.strip():
        raise _record_error(source, record_id, "empty CIF")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # = Structure.from_str(text, fmt="cif") without the stoichiometry
            # cross-check, which only warns (and costs ~10 % of the time)
            structure = CifParser.from_str(text, check_cif=False).parse_structures(primitive=False)[
                0
            ]
        except Exception as exc:
            notes = "; ".join(dict.fromkeys(str(w.message) for w in caught))
            detail = f"{type(exc).__name__}: {exc}" + (f" [{notes}]" if notes else "")
            raise _record_error(source, record_id, f"unparsable CIF ({detail})") from exc
    if len(structure) == 0:
        raise _record_error(source, record_id, "CIF has no atoms")
    if not structure.is_ordered:
        raise _record_error(
            source, record_id, "CIF describes a disordered structure (partial occupancies)"
        )
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = None
    atoms.pbc = True
    return atoms


def _find_id_prop(path: Path) -> Path:
    """``id_prop.csv`` of a CGCNN folder given the folder or the file itself."""
    if path.is_file() and path.name == ID_PROP:
        return path
    if not path.exists():
        raise FileNotFoundError(f"CIF folder not found: {path}")
    if not path.is_dir():
        raise DataError(f"{path}: not a CGCNN CIF folder (expected a directory with {ID_PROP})")
    id_prop = path / ID_PROP
    if not id_prop.is_file():
        raise DataError(
            f"{path}: no {ID_PROP} (a CGCNN folder has {ID_PROP} with rows "
            "'id,value[,value...]' and one <id>.cif per row)"
        )
    return id_prop


def read_cif_folder(
    path: str | os.PathLike[str], targets: str | Sequence[str] | None = None
) -> list[Record]:
    """Read a CGCNN dataset folder.

    ``id_prop.csv`` has no header; each row is ``id,value[,value...]`` and the
    structure of row ``id`` is ``<folder>/<id>.cif`` (any space group; parsed
    with pymatgen, sites in pymatgen's order).

    Args:
        path: the folder (or its ``id_prop.csv``).
        targets: names of the value columns, in order; default ``"target"`` for
            one column, ``"target_0", "target_1", ...`` for several. Values are
            floats in the units of the dataset.

    Returns:
        One :class:`Record` per row, in file order; ``source`` is
        ``"<folder>/<id>.cif (id_prop.csv row <i>)"`` with ``i`` counted from 0.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: no ``id_prop.csv``, ragged rows, a wrong number of target
            names, a non-numeric / NaN value, a missing or unparsable CIF file,
            or duplicate ids.
    """
    id_prop = _find_id_prop(Path(path))
    folder = id_prop.parent
    names = _target_names(targets)

    with id_prop.open(newline="", encoding="utf-8-sig") as fh:
        rows = [(i, row) for i, row in enumerate(csv.reader(fh)) if any(c.strip() for c in row)]
    if not rows:
        raise DataError(f"{id_prop}: no rows (expected 'id,value[,value...]' per line)")

    n_values = len(rows[0][1]) - 1
    if n_values < 1:
        raise DataError(
            f"{id_prop}:row {rows[0][0]}: expected 'id,value[,value...]', got {rows[0][1]}"
        )
    if names is None:
        names = ["target"] if n_values == 1 else [f"target_{k}" for k in range(n_values)]
    elif len(names) != n_values:
        raise DataError(
            f"{id_prop}: {n_values} value column(s) per row but {len(names)} target name(s) "
            f"given: {names}"
        )

    records: list[Record] = []
    seen: dict[str, str] = {}
    for i, row in rows:
        row_source = f"{id_prop}:row {i}"
        record_id = row[0].strip()
        if not record_id:
            raise _record_error(row_source, None, "empty id")
        if len(row) - 1 != n_values:
            raise _record_error(
                row_source,
                record_id,
                f"{len(row) - 1} value(s), expected {n_values} like row {rows[0][0]}",
            )
        _claim_id(seen, record_id, row_source, str(id_prop))
        values = {
            name: _scalar(cell, name=name, source=row_source, record_id=record_id)
            for name, cell in zip(names, row[1:], strict=True)
        }
        cif_path = folder / f"{record_id}.cif"
        source = f"{cif_path} ({ID_PROP} row {i})"
        try:
            text = cif_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise _record_error(row_source, record_id, f"CIF file {cif_path} not found") from None
        atoms = _atoms_from_cif(text, source=source, record_id=record_id)
        records.append(Record(id=record_id, atoms=atoms, targets=values, source=source))
    return records

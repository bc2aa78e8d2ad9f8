"""Reading the structures named on a command line."""

from __future__ import annotations

from pathlib import Path


def read_structures(paths: list[str], fmt: str | None = None) -> tuple[list[str], list]:
    """``(ids, atoms)`` from structure files (anything ``ase.io.read`` reads: CIF,
    POSCAR, extxyz, ...) and data files (ASE ``.db``, CDVAE ``.csv``, CIF folders),
    or from every path with the data reader ``fmt``."""
    from ase.io import read

    from crystalgnn_plugins.data import read_records

    ids: list[str] = []
    structures: list = []
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"input not found: {path}")
        if fmt is not None or p.is_dir() or p.suffix.lower() in (".db", ".csv"):
            for rec in read_records(path, fmt):
                ids.append(str(rec.id))
                structures.append(rec.atoms)
            continue
        try:
            frames = read(path, index=":")
        except Exception as exc:  # ase raises many kinds
            raise ValueError(f"{path}: cannot read structures ({exc})") from None
        for k, atoms in enumerate(frames):
            ids.append(p.name if len(frames) == 1 else f"{p.name}:{k}")
            structures.append(atoms)
    if not structures:
        raise ValueError("no structures in the inputs")
    return ids, structures

"""Dispatch to a data reader by format name, through the plugin ``readers`` registry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from crystalgnn_plugins.data.records import DataError, Record

__all__ = ["infer_format", "read_records"]

#: File suffix -> built-in reader name used by :func:`infer_format`.
SUFFIX_FORMATS = {
    ".csv": "cdvae-csv",
    ".db": "ase-db",
    ".xyz": "extxyz",
    ".extxyz": "extxyz",
}


def _available_formats() -> list[str]:
    from crystalgnn_plugins.plugins import get_registry

    return get_registry("readers").names()


def infer_format(path: str | os.PathLike[str]) -> str:
    """Reader name for ``path`` from its suffix or layout.

    ``.csv`` -> ``"cdvae-csv"``, a directory containing ``id_prop.csv`` ->
    ``"cif-folder"``, ``.db`` -> ``"ase-db"``, ``.xyz`` / ``.extxyz`` -> ``"extxyz"``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: the format cannot be inferred (the message lists the formats).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if path.is_dir():
        if (path / "id_prop.csv").is_file():
            return "cif-folder"
        problem = "is a directory without id_prop.csv"
    else:
        fmt = SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is not None:
            return fmt
        problem = f"has an unknown suffix {path.suffix!r}" if path.suffix else "has no suffix"
    raise DataError(
        f"{path}: cannot infer the data format ({problem}); pass format= one of "
        f"{', '.join(_available_formats())}"
    )


def read_records(
    path: str | os.PathLike[str], format: str | None = None, **options: Any
) -> list[Record]:
    """Read a dataset with a registered reader.

    Args:
        path: file or directory.
        format: reader name in the plugin ``readers`` registry (built-in:
            ``"cdvae-csv"``, ``"cif-folder"``, ``"ase-db"``, ``"extxyz"``);
            default: inferred from ``path`` with :func:`infer_format`.
        **options: passed to the reader, e.g. ``targets=["heat_all"]``.

    Returns:
        The records, as a list.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: the format cannot be inferred, or the data is malformed.
        crystalgnn_plugins.plugins.UnknownNameError: ``format`` is not
            registered (a ``KeyError``; the message lists the formats).
        TypeError: the reader yielded something other than :class:`Record`.
    """
    from crystalgnn_plugins.plugins import get_registry

    if format is None:
        format = infer_format(path)
    reader = get_registry("readers").get(format)
    records = list(reader(path, **options))
    for rec in records:
        if not isinstance(rec, Record):
            raise TypeError(
                f"reader {format!r} returned a {type(rec).__name__}, expected "
                "crystalgnn_plugins.data.Record"
            )
    return records

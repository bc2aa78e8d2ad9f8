"""Atomic file writes: a temporary file in the target's directory, flushed to
disk, then renamed over the target, so a reader never sees a half-written file
and a crash leaves the old file in place. The new file gets the permissions
``open()`` would give it (``0o666`` minus the umask), not ``mkstemp``'s ``0o600``,
so saved models and reports stay readable by the user's group."""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a binary temporary file, then rename it to ``path``
    (parent directories are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2,
                      default: Callable[[Any], Any] | None = None, sort_keys: bool = False,
                      compress: bool = False) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (gzipped with ``compress=True``)."""
    if not compress:
        text = json.dumps(data, indent=indent, default=default, sort_keys=sort_keys)
        return atomic_write(path, lambda fh: fh.write(text.encode()))

    def write(fh: IO[bytes]) -> None:
        with gzip.GzipFile(fileobj=fh, mode="wb") as gz, io.TextIOWrapper(gz, encoding="utf-8") as text:
            json.dump(data, text, indent=indent, default=default, sort_keys=sort_keys)

    return atomic_write(path, write)

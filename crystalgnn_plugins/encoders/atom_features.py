"""Fixed per-element input features in the style of CGCNN (one-hot bins of
group, period, electronegativity, covalent radius, valence electrons, first
ionisation energy, electron affinity, block and atomic volume)."""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np

MAX_Z = 118

# (name, number of bins, low, high, log-scale)
_CONTINUOUS = (
    ("electronegativity", 10, 0.5, 4.0, False),
    ("covalent_radius", 10, 0.25, 2.5, False),  # Å
    ("first_ionization_energy", 10, 3.0, 25.0, True),  # eV
    ("electron_affinity", 10, -1.0, 3.7, False),  # eV
    ("molar_volume", 10, 1.5, 75.0, True),  # cm^3/mol
)
_BLOCKS = ("s", "p", "d", "f")
NUM_FEATURES = 18 + 7 + 12 + len(_BLOCKS) + sum(n for _, n, *_ in _CONTINUOUS)


def _one_hot(index: int | None, n: int) -> np.ndarray:
    v = np.zeros(n)
    if index is not None:
        v[min(max(index, 0), n - 1)] = 1.0
    return v


def _bin(value: float | None, n: int, lo: float, hi: float, log: bool) -> int | None:
    if value is None or not math.isfinite(value):
        return None
    if log:
        if value <= 0:
            return 0
        value, lo, hi = math.log(value), math.log(lo), math.log(hi)
    return int((value - lo) / (hi - lo) * n)


def _safe(fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v = fn()
        return None if v is None else float(v)
    except Exception:  # missing data in pymatgen's table
        return None


def _valence(group: int, block: str) -> int:
    if block == "f":
        return 3
    return group if group <= 12 else group - 10


@lru_cache(maxsize=1)
def atom_feature_table() -> np.ndarray:
    """Feature table of shape ``(MAX_Z + 1, NUM_FEATURES)``; row ``Z`` describes element ``Z``."""
    from ase.data import covalent_radii
    from pymatgen.core.periodic_table import Element

    table = np.zeros((MAX_Z + 1, NUM_FEATURES))
    for z in range(1, MAX_Z + 1):
        el = Element.from_Z(z)
        group, row, block = el.group, el.row, el.block
        parts = [
            _one_hot(group - 1, 18),
            _one_hot(row - 1, 7),
            _one_hot(_valence(group, block) - 1, 12),
            _one_hot(_BLOCKS.index(block) if block in _BLOCKS else None, len(_BLOCKS)),
        ]
        values = {
            "electronegativity": _safe(lambda el=el: el.X),
            "covalent_radius": float(covalent_radii[z]),
            "first_ionization_energy": _safe(lambda el=el: el.ionization_energies[0]),
            "electron_affinity": _safe(lambda el=el: el.electron_affinity),
            "molar_volume": _safe(lambda el=el: el.molar_volume),
        }
        for name, n, lo, hi, log in _CONTINUOUS:
            parts.append(_one_hot(_bin(values[name], n, lo, hi, log), n))
        table[z] = np.concatenate(parts)
    return table

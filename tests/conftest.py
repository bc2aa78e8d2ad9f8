"""Shared fixtures: small EMT-labelled data sets built in the tests (no ../shared)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from crystalgnn_plugins.data.records import Record


def emt_frames(n: int, seed: int, element: str = "Cu", a0: float = 3.61) -> list[Record]:
    """Rattled (0.01-0.1 Å) and strained (±6 %, with shear) fcc cells labelled by EMT."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = bulk(element, "fcc", a=a0, cubic=bool(k % 2))
        if k % 3 == 0:
            atoms = atoms.repeat((2, 1, 1))
        eps = rng.uniform(-0.06, 0.06) * np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        atoms.rattle(rng.uniform(0.01, 0.1), seed=int(rng.integers(1_000_000_000)))
        atoms.calc = EMT()
        targets = {
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "stress": atoms.get_stress(),
        }
        targets["energy_per_atom"] = targets["energy"] / len(atoms)
        atoms.calc = None
        out.append(Record(id=f"{element}-{seed}-{k}", atoms=atoms, targets=targets, source=f"emt-{seed}:{k}"))
    return out


@pytest.fixture(scope="session")
def emt_data() -> tuple[list[Record], list[Record]]:
    """(train, validation) EMT-labelled Cu frames."""
    return emt_frames(120, 1), emt_frames(30, 2)

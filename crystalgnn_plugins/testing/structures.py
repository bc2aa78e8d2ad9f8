"""Random crystals for tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms


def random_crystal(
    rng: np.random.Generator | int,
    num_atoms: int = 6,
    species: Sequence[str] = ("Cu", "Ag", "Au"),
    volume_per_atom: float = 16.0,
    min_distance: float = 1.9,
    triclinic: float = 0.25,
) -> Atoms:
    """A periodic triclinic cell with randomly placed atoms no closer than
    ``min_distance`` (Å); every species appears at least once if possible."""
    rng = np.random.default_rng(rng)
    for _ in range(1000):
        length = (volume_per_atom * num_atoms) ** (1 / 3)
        cell = length * (np.eye(3) + triclinic * rng.uniform(-1, 1, (3, 3)))
        if abs(np.linalg.det(cell)) < 0.5 * length**3:
            continue
        symbols = [species[i % len(species)] for i in range(num_atoms)]
        rng.shuffle(symbols)
        atoms = Atoms(symbols, cell=cell, pbc=True)
        frac: list[np.ndarray] = []
        for _ in range(num_atoms * 200):
            trial = rng.uniform(0, 1, 3)
            atoms_trial = Atoms(
                symbols[: len(frac) + 1], scaled_positions=[*frac, trial], cell=cell, pbc=True
            )
            if len(frac) == 0 or atoms_trial.get_distances(len(frac), range(len(frac)), mic=True).min() >= min_distance:
                # also check the atom against its own images
                if min(np.linalg.norm(cell, axis=1)) >= min_distance:
                    frac.append(trial)
            if len(frac) == num_atoms:
                atoms.set_scaled_positions(np.array(frac))
                return atoms
    raise RuntimeError("could not place atoms; lower min_distance or raise volume_per_atom")


def rattled_supercell(atoms: Atoms, repeat=(2, 2, 2), stdev: float = 0.05, seed: int = 0) -> Atoms:
    """A rattled (Å) supercell of ``atoms``."""
    big = atoms.repeat(repeat)
    big.rattle(stdev=stdev, seed=seed)
    return big

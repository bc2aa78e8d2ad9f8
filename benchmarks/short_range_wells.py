"""False energy wells at short range: one pair pushed together, in dimers and in bulk crystals.

For each case one nearest-neighbour pair is moved from 0.2 to 1.0 of its covalent bond
length (``ase.data.covalent_radii``) along its bond, everything else fixed, and every local
energy minimum below 0.8 of the bond length is listed (fraction of the bond length, energy
above the unperturbed structure in eV, barrier to escape outwards in eV). A physical
potential has none: the energy rises as the pair closes in. ``--floor`` and ``--zbl``
try other ranges of the network's distance floor and of the ZBL core repulsion on the
same weights (fractions of the bond length).

    python benchmarks/short_range_wells.py [--model default] [--floor 0.3,0.4] [--zbl 0.2,0.4] [--teacher]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers, covalent_radii

#: (name, structure, the two elements of the moved pair); in bulk, atom 0 and its nearest neighbour
CASES = (
    ("Cu-Cu dimer", None, "Cu", "Cu"),
    ("Ti-O dimer", None, "Ti", "O"),
    ("C-O dimer", None, "C", "O"),
    ("Si-Si dimer", None, "Si", "Si"),
    ("Cu fcc 2x2x2", lambda: bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2), "Cu", "Cu"),
    ("Si diamond", lambda: bulk("Si", "diamond", a=5.43, cubic=True), "Si", "Si"),
    ("C diamond", lambda: bulk("C", "diamond", a=3.57, cubic=True), "C", "C"),
    ("MgO rock salt", lambda: bulk("MgO", "rocksalt", a=4.21, cubic=True), "Mg", "O"),
    ("NaCl rock salt", lambda: bulk("NaCl", "rocksalt", a=5.64, cubic=True), "Na", "Cl"),
)


def pair_at(structure: Atoms | None, a: str, b: str, d: float) -> Atoms:
    """The dimer ``a-b`` at ``d`` Å in a 14 Å box, or ``structure`` with atom 0's nearest
    neighbour moved to ``d`` Å from it along their bond."""
    if structure is None:
        return Atoms([a, b], positions=[[0, 0, 0], [d, 0, 0]], cell=[14.0] * 3, pbc=True)
    atoms = structure.copy()
    dist = atoms.get_distances(0, range(len(atoms)), mic=True)
    dist[0] = np.inf
    j = int(np.argmin(dist))
    v = atoms.get_distance(0, j, mic=True, vector=True)
    atoms.positions[j] = atoms.positions[0] + v / np.linalg.norm(v) * d
    return atoms


def wells(calc, structure: Atoms | None, a: str, b: str, points: int = 81) -> list[tuple[float, float, float]]:
    """Local minima below 0.8 bond lengths: (fraction, energy above the far end eV, barrier eV)."""
    bond = covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]]
    frac = np.linspace(0.2, 1.0, points)
    energy = []
    for f in frac:
        atoms = pair_at(structure, a, b, f * bond)
        atoms.calc = calc
        energy.append(atoms.get_potential_energy())
    e = np.array(energy)
    return [(float(frac[k]), float(e[k] - e[-1]), float(e[k + 1 :].max() - e[k]))
            for k in range(1, points - 1) if e[k - 1] > e[k] < e[k + 1] and frac[k] < 0.8]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="registered name or saved model directory")
    ap.add_argument("--floor", help="network floor range LOWER,UPPER (fractions of the bond length)")
    ap.add_argument("--zbl", help="core repulsion range INNER,OUTER (fractions of the bond length)")
    ap.add_argument("--teacher", action="store_true", help="scan CHGNet 0.3.0 instead (needs chgnet)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.teacher:
        from chgnet.model import CHGNet, CHGNetCalculator

        calc, what = CHGNetCalculator(CHGNet.load(verbose=False), use_device="cpu"), "CHGNet 0.3.0"
    else:
        from crystalgnn_plugins.calculators import GNNCalculator
        from crystalgnn_plugins.models.pretrained import resolve_model

        model = resolve_model(args.model, dtype=torch.float64)
        if args.floor:
            model.set_network_floor(True, *map(float, args.floor.split(",")))
        if args.zbl:
            model.set_core_repulsion(True, *map(float, args.zbl.split(",")))
        calc = GNNCalculator(model)
        what = f"{args.model} (floor {model.network_floor}, repulsion {model.core_repulsion})"
    print(f"{what}: local minima below 0.8 of the bond length (fraction, E above the structure eV, barrier eV)")
    for name, make, a, b in CASES:
        found = wells(calc, make() if make else None, a, b)
        print(f"  {name:15s} " + ("none" if not found else "  ".join(f"{f:.2f}: {e:+.1f} / {h:.2f}" for f, e, h in found)))


if __name__ == "__main__":
    main()

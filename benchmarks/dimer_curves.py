"""Energy (eV) and force (eV/Å) of isolated dimers against distance: where a learned
potential extrapolates at short range (no training frame has pairs that close).

    python benchmarks/dimer_curves.py [--model default] [--pairs Si-Si,C-C,Ti-O,Cs-Au]
"""

from __future__ import annotations

import argparse

import torch
from ase import Atoms

from crystalgnn_plugins.calculators import GNNCalculator

DISTANCES = (2.5, 2.0, 1.6, 1.3, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="registered name or saved model directory")
    ap.add_argument("--pairs", default="Si-Si,C-C,Ti-O,Cs-Au")
    ap.add_argument("--box", type=float, default=12.0, help="cubic cell edge, Å (no image within the cutoff)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    calc = GNNCalculator(args.model)
    print(f"{'pair':8} " + " ".join(f"{d:>14.1f}" for d in DISTANCES) + "   (Å: energy eV / force on atom 2 along the bond, eV/Å)")
    for pair in args.pairs.split(","):
        a, b = pair.split("-")
        cells = []
        for d in DISTANCES:
            atoms = Atoms([a, b], positions=[[0, 0, 0], [d, 0, 0]], cell=[args.box] * 3, pbc=True)
            atoms.calc = calc
            cells.append(f"{atoms.get_potential_energy():7.1f}/{atoms.get_forces()[1, 0]:<6.0f}")
        print(f"{pair:8} " + " ".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    main()

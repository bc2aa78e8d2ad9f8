"""Quick start: train a small potential on EMT labels, then relax a strained,
rattled copper cell with it through ASE (FIRE + FrechetCellFilter) and compare
with EMT's own relaxation.

    python examples/quickstart.py
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from crystalgnn_plugins import GNNCalculator
from crystalgnn_plugins.data import Record
from crystalgnn_plugins.models import EnergyModel
from crystalgnn_plugins.training import train


def emt_frames(n: int, seed: int) -> list[Record]:
    """Rattled and strained fcc Cu cells labelled by EMT (eV, eV/Å, eV/Å³)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=bool(k % 2))
        eps = rng.uniform(-0.06, 0.06) * np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.rattle(rng.uniform(0.01, 0.1), seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        targets = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}
        atoms.calc = None
        frames.append(Record(id=f"cu-{seed}-{k}", atoms=atoms, targets=targets, source="emt"))
    return frames


def relax(calc) -> tuple[float, bool, int]:
    atoms = bulk("Cu", "fcc", a=3.61 * 1.04, cubic=True)
    atoms.rattle(0.05, seed=3)
    atoms.calc = calc
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    converged = opt.run(fmax=0.01, steps=500)
    return atoms.get_volume() ** (1 / 3), bool(converged), opt.nsteps


def main() -> None:
    torch.manual_seed(0)
    model = EnergyModel("smooth_cgcnn", {"atom_features": 16, "num_conv": 2, "cutoff": 4.5}, hidden=32).double()
    with tempfile.TemporaryDirectory() as out:
        result = train(
            emt_frames(120, 1), emt_frames(30, 2), model=model, epochs=40, batch_size=8, lr=5e-3,
            weights={"forces": 1.0, "stress": 1.0}, out_dir=out, progress=False,
        )
        calc = GNNCalculator(f"{out}/model", dtype=torch.float64)
        val = result.report["metrics"]["val"]
        print(f"validation: force MAE {val['forces']['mae'] * 1000:.0f} meV/Å, stress MAE {val['stress_gpa']['mae']:.2f} GPa")
        a_gnn, ok_gnn, n_gnn = relax(calc)
        a_emt, ok_emt, n_emt = relax(EMT())
    print(f"relaxed lattice constant: GNN {a_gnn:.4f} Å ({'converged' if ok_gnn else 'NOT converged'} in {n_gnn} steps), "
          f"EMT {a_emt:.4f} Å ({'converged' if ok_emt else 'NOT converged'} in {n_emt} steps), "
          f"difference {100 * abs(a_gnn - a_emt) / a_emt:.2f} %")


if __name__ == "__main__":
    main()

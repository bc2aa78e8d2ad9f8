"""The shipped models, offline: relax crystals with the default potential
(``GNNCalculator()``) and generate new perovskites with the default generator.

    python examples/shipped_models.py

Needs only the package (the weights ship inside it); runs in well under a minute
on a laptop CPU.
"""

from __future__ import annotations

from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from pymatgen.core import Lattice, Structure

from crystalgnn_plugins import GNNCalculator, relax


def main() -> None:
    # 1. one crystal through ASE: copper, started 3 % too large
    atoms = bulk("Cu", "fcc", a=3.61 * 1.03, cubic=True)
    atoms.calc = GNNCalculator()  # the default potential: energy (eV), forces (eV/Å), stress (eV/Å³)
    converged = FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.02, steps=300)
    a = atoms.get_volume() ** (1 / 3)
    print(f"Cu: a = {a:.3f} Å (teacher CHGNet 3.616 Å, experiment 3.615 Å), "
          f"E = {atoms.get_potential_energy() / len(atoms):.3f} eV/atom, converged: {converged}")

    # 2. many crystals at once with the batched relaxer (pymatgen in, pymatgen out)
    cubic = [
        Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.0), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),
        Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.8), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    ]
    for res in relax(cubic, batched=True, fmax=0.05, steps=500):
        s = res.structure
        print(f"{s.composition.reduced_formula:>7}: a = {s.lattice.a:.3f} Å, E = {res.energy_per_atom:.3f} eV/atom, "
              f"converged: {res.converged} in {res.steps} steps")

    # 3. new crystals from the default generator, relaxed with the default potential
    from crystalgnn_plugins.generation import CrystalStructureSource

    source = CrystalStructureSource()  # the shipped generator
    for s in source.get_structures(3, composition="BaTiO3", relax=True, seed=0):
        gen = s.properties["generation"]
        print(f"generated {s.composition.reduced_formula} ({gen['condition']}): {len(s)} atoms, "
              f"{s.volume / len(s):.1f} Å³/atom, relaxation converged: {gen['relaxation']['converged']}")


if __name__ == "__main__":
    main()

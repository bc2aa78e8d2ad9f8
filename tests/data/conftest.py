"""Small EMT-labelled crystals written in every supported format (built in tmp dirs)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ase import Atoms


@dataclass
class Labelled:
    """A reference structure with its EMT labels (eV, eV/Å, eV/Å³) and a scalar ``gap``."""

    id: str
    atoms: Atoms
    energy: float
    forces: np.ndarray
    stress: np.ndarray
    gap: float


def _crystal(
    symbols: str, base: list[list[float]], lengths: tuple[float, float, float], seed: int
) -> Atoms:
    """Orthorhombic crystal with fractional coordinates exactly representable in a CIF.

    Fractional coordinates are ``base + 0.0137 + U(0, 0.01)`` rounded to 6
    decimals: inside (0, 1), away from 1/3 and 2/3 (which pymatgen snaps), and
    written losslessly with 8 decimals; atoms are given in pymatgen's
    (electronegativity) order so the CIF readers keep it.
    """
    rng = np.random.default_rng(seed)
    frac = np.round(np.asarray(base) + 0.0137 + rng.uniform(0.0, 0.01, size=(len(base), 3)), 6)
    return Atoms(symbols, scaled_positions=frac, cell=np.diag(lengths), pbc=True)


def make_labelled() -> list[Labelled]:
    from ase.calculators.emt import EMT

    fcc = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    two_fcc = [[x / 2 + shift, y, z] for shift in (0.0, 0.5) for x, y, z in fcc]
    crystals = {
        "cu-fcc": _crystal("Cu4", fcc, (3.62, 3.6, 3.65), seed=1),
        "cu3au": _crystal("Cu3Au", [*fcc[1:], fcc[0]], (3.75, 3.74, 3.76), seed=2),
        "alni-b2": _crystal("AlNi", [[0, 0, 0], [0.5, 0.5, 0.5]], (2.87, 2.9, 2.88), seed=3),
        "ni-2x1": _crystal("Ni8", two_fcc, (7.04, 3.5, 3.55), seed=4),
    }
    out = []
    for k, (name, atoms) in enumerate(crystals.items()):
        calc_atoms = atoms.copy()
        calc_atoms.calc = EMT()
        out.append(
            Labelled(
                id=name,
                atoms=atoms,
                energy=float(calc_atoms.get_potential_energy()),
                forces=np.array(calc_atoms.get_forces()),
                stress=np.array(calc_atoms.get_stress()),
                gap=0.1 * k + 0.123456789012345,
            )
        )
    return out


def cif_string(atoms: Atoms) -> str:
    """P1 CIF of ``atoms`` as pymatgen writes it (like the CDVAE CSV files)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms).to(fmt="cif")


def with_results(item: Labelled, **info: object) -> Atoms:
    """Copy of the structure carrying its EMT results as a SinglePointCalculator."""
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = item.atoms.copy()
    atoms.info.update(info)
    atoms.calc = SinglePointCalculator(
        atoms, energy=item.energy, forces=item.forces, stress=item.stress
    )
    return atoms


def write_cdvae_csv(path: Path, items: list[Labelled]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["", "material_id", "cif", "formula", "energy", "gap"])
        for i, it in enumerate(items):
            writer.writerow(
                [
                    10 + i,
                    it.id,
                    cif_string(it.atoms),
                    it.atoms.get_chemical_formula(),
                    repr(it.energy),
                    repr(it.gap),
                ]
            )
    return path


def write_cif_folder(path: Path, items: list[Labelled]) -> Path:
    path.mkdir()
    with (path / "id_prop.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        for it in items:
            writer.writerow([it.id, repr(it.energy), repr(it.gap)])
            (path / f"{it.id}.cif").write_text(cif_string(it.atoms))
    return path


def write_ase_db(path: Path, items: list[Labelled]) -> Path:
    import ase.db

    with ase.db.connect(str(path)) as db:
        for it in items:
            db.write(with_results(it), name=it.id, gap=it.gap, relaxed=False, origin="emt")
    return path


def write_extxyz(path: Path, items: list[Labelled]) -> Path:
    import ase.io

    frames = [with_results(it, name=it.id, gap=it.gap, config_type="bulk") for it in items]
    ase.io.write(str(path), frames, format="extxyz")
    return path


@pytest.fixture(scope="session")
def writers() -> SimpleNamespace:
    """The file writers of this module (test modules cannot import conftest)."""
    return SimpleNamespace(
        cif_string=cif_string,
        with_results=with_results,
        cdvae_csv=write_cdvae_csv,
        cif_folder=write_cif_folder,
        ase_db=write_ase_db,
        extxyz=write_extxyz,
    )


@pytest.fixture(scope="session")
def labelled() -> list[Labelled]:
    return make_labelled()


@pytest.fixture(scope="session")
def datasets(labelled: list[Labelled], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The labelled structures in every format: ``{format name: path}``."""
    root = tmp_path_factory.mktemp("datasets")
    return {
        "cdvae-csv": write_cdvae_csv(root / "dev.csv", labelled),
        "cif-folder": write_cif_folder(root / "cgcnn", labelled),
        "ase-db": write_ase_db(root / "emt.db", labelled),
        "extxyz": write_extxyz(root / "emt.extxyz", labelled),
    }

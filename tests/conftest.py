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


# ---------------------------------------------------------------- generator
# Tiny crystals built with pymatgen and one tiny generator trained once per
# session; shared by tests/generation and the ``crystalgnn generate`` CLI tests.

GEN_PEROV = "perov"
GEN_CARBON = "carbon"
GEN_ELEMENTS = ["Ba", "C", "Ca", "O", "Sr", "Ti", "Zr"]


def perovskite(a_site: str, b_site: str, a: float, rng: np.random.Generator):
    """Cubic ABO3 (5 atoms) with a small random strain and rattle."""
    from pymatgen.core import Lattice, Structure

    eps = rng.uniform(-0.02, 0.02, (3, 3))
    eps = 0.5 * (eps + eps.T)
    lattice = Lattice(a * (np.eye(3) + eps))
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    frac = frac + rng.normal(0, 0.01, frac.shape)
    return Structure(lattice, [a_site, b_site, "O", "O", "O"], np.mod(frac, 1.0))


def diamond(a: float, rng: np.random.Generator, primitive: bool):
    """Diamond carbon: 2-atom primitive (fcc) or 8-atom conventional cell, rattled."""
    from pymatgen.core import Lattice, Structure

    if primitive:
        lattice = Lattice(0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]))
        frac = np.array([[0, 0, 0], [0.25, 0.25, 0.25]])
    else:
        lattice = Lattice.cubic(a)
        fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
        frac = np.concatenate([fcc, fcc + 0.25])
    frac = frac + rng.normal(0, 0.005, frac.shape)
    return Structure(lattice, ["C"] * len(frac), np.mod(frac, 1.0))


def graphite(a: float, c: float, rng: np.random.Generator):
    """AB-stacked graphite-like carbon (4 atoms), rattled."""
    from pymatgen.core import Lattice, Structure

    frac = np.array([[0, 0, 0.25], [0, 0, 0.75], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    frac = frac + rng.normal(0, 0.005, frac.shape)
    return Structure(Lattice.hexagonal(a, c), ["C"] * 4, np.mod(frac, 1.0))


def make_generator_dataset(seed: int = 0, n_perov: int = 40, n_carbon: int = 20):
    """(structures, conditions): perovskites (condition ``perov``) and carbon (``carbon``)."""
    import itertools

    rng = np.random.default_rng(seed)
    structures, conditions = [], []
    combos = itertools.cycle(itertools.product(["Sr", "Ba", "Ca"], ["Ti", "Zr"]))
    for _ in range(n_perov):
        a_site, b_site = next(combos)
        structures.append(perovskite(a_site, b_site, rng.uniform(3.9, 4.2), rng))
        conditions.append(GEN_PEROV)
    for k in range(n_carbon):
        if k % 3 == 0:
            s = graphite(rng.uniform(2.42, 2.5), rng.uniform(6.5, 6.9), rng)
        else:
            s = diamond(rng.uniform(3.52, 3.62), rng, primitive=bool(k % 3 == 1))
        structures.append(s)
        conditions.append(GEN_CARBON)
    return structures, conditions


@pytest.fixture(scope="session")
def generator_dataset():
    """(structures, conditions): 40 perovskites and 20 carbon crystals."""
    return make_generator_dataset(0)


@pytest.fixture(scope="session")
def trained_generator(tmp_path_factory, generator_dataset):
    """``(flow, model_dir, report)`` of a tiny generator trained for a few epochs (~7 s)."""
    import torch

    from crystalgnn_plugins.generation import train_generator

    structures, conditions = generator_dataset
    val_s, val_c = make_generator_dataset(1, n_perov=6, n_carbon=3)
    out = tmp_path_factory.mktemp("generator")
    with torch.random.fork_rng():
        flow, report = train_generator(
            structures, conditions, val_s, val_c,
            flow_kwargs={"hidden": 32, "num_layers": 2, "encoder_layers": 1, "latent_dim": 4, "cond_features": 8},
            epochs=5, batch_size=20, lr=3e-3, seed=0, out_dir=out,
        )
    return flow, out / "model", report


@pytest.fixture(scope="session")
def generator_dir(trained_generator):
    """Directory of the saved tiny generator."""
    return trained_generator[1]


@pytest.fixture(scope="session")
def tiny_energy_model():
    """A small untrained smooth-CGCNN energy model (float64, deterministic init)."""
    import torch

    from crystalgnn_plugins.models import EnergyModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = EnergyModel(
            "smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0},
            elements=GEN_ELEMENTS, hidden=8, num_hidden=1,
        )
    return model.double().eval()


@pytest.fixture(scope="session")
def energy_model_dir(tiny_energy_model, tmp_path_factory):
    """The tiny energy model saved as a model directory."""
    from crystalgnn_plugins.models.io import save_model

    return save_model(tiny_energy_model, tmp_path_factory.mktemp("energy") / "model")

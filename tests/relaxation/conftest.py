"""Models and structures for the relaxation tests (all built here, fast, no training).

* ``emt_model``: an :class:`EnergyModel` whose energies, forces and stress are ASE's
  EMT -- exact physics through the whole relaxation machinery (graph batching,
  FIRE, cell filter), independent of any training.
* ``morse_model``: a smooth Morse pair potential for Cu as an ``EnergyModel``
  (energies from the graph's edges, forces and stress by the model's autograd):
  fast and exact, for comparing the two relaxation paths.
* ``gnn_model``: a real (untrained) ``smooth_cgcnn`` energy model, its per-atom
  energies scaled up so that its forces are of the size of EMT's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from crystalgnn_plugins.models import EnergyModel


class EMTModel(EnergyModel):
    """An ``EnergyModel`` that evaluates each crystal of the graph with EMT.

    ``calls`` records the number of crystals in every forward call.
    """

    def __init__(self):
        super().__init__("smooth_cgcnn", {"atom_features": 2, "num_conv": 1, "cutoff": 2.0}, hidden=2)
        self.double()
        self.calls: list[int] = []

    def forward(self, graph, *, compute_forces=True, compute_stress=True, create_graph=False):
        self.calls.append(graph.num_graphs)
        dtype = graph.positions.dtype
        energy, energies, forces, stress = [], [], [], []
        start = 0
        for b, n in enumerate(graph.num_atoms.tolist()):
            pbc = graph.pbc[b].numpy()
            atoms = Atoms(
                numbers=graph.atomic_numbers[start:start + n].numpy(),
                positions=graph.positions[start:start + n].detach().double().numpy(),
                cell=graph.cell[b].detach().double().numpy(), pbc=pbc,
            )
            atoms.calc = EMT()
            energy.append(atoms.get_potential_energy())
            energies.append(atoms.get_potential_energies())
            forces.append(atoms.get_forces())
            stress.append(atoms.get_stress(voigt=False) if pbc.all() else np.full((3, 3), np.nan))
            start += n
        out = {
            "energy": torch.tensor(np.array(energy), dtype=dtype),
            "energies": torch.tensor(np.concatenate(energies), dtype=dtype),
        }
        if compute_forces:
            out["forces"] = torch.tensor(np.concatenate(forces), dtype=dtype)
        if compute_stress:
            out["stress"] = torch.tensor(np.array(stress), dtype=dtype)
        return out


class MorseModel(EnergyModel):
    """Morse pair potential (Girifalco-Weizer Cu parameters) times a C2 switch at
    ``cutoff``, through :meth:`EnergyModel.forward`; ``calls`` as in :class:`EMTModel`."""

    def __init__(self, D: float = 0.3429, alpha: float = 1.3588, r0: float = 2.866, cutoff: float = 5.0):
        super().__init__("smooth_cgcnn", {"atom_features": 2, "num_conv": 1, "cutoff": cutoff}, hidden=2)
        self.D, self.alpha, self.r0 = D, alpha, r0
        self.double()
        self.calls: list[int] = []

    def atomic_energies(self, graph, edge_vectors):
        d = torch.linalg.norm(edge_vectors, dim=-1)
        x = (d / self.cutoff).clamp(max=1.0)
        switch = (1 - x) ** 3 * (1 + 3 * x + 6 * x**2)
        y = torch.exp(-self.alpha * (d - self.r0))
        pair = self.D * (y * y - 2 * y) * switch
        return torch.zeros(graph.num_nodes, dtype=d.dtype).index_add(0, graph.edge_index[0], 0.5 * pair)

    def forward(self, graph, **kwargs):
        self.calls.append(graph.num_graphs)
        return super().forward(graph, **kwargs)


@pytest.fixture
def morse_model() -> MorseModel:
    return MorseModel()


@pytest.fixture
def emt_model() -> EMTModel:
    return EMTModel()


@pytest.fixture
def gnn_model() -> EnergyModel:
    torch.manual_seed(0)
    model = EnergyModel(
        "smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, elements=["Cu"], hidden=8
    ).double()
    model.scale.fill_(300.0)
    return model.eval()


def distorted_cu(seed: int = 0, strain: float = 0.04, rattle: float = 0.05) -> list[Atoms]:
    """Strained (with shear) and rattled Cu cells of 1, 4, 8 and 4 atoms."""
    rng = np.random.default_rng(seed)
    out = []
    for k, (cubic, rep) in enumerate([(False, (1, 1, 1)), (True, (1, 1, 1)), (True, (2, 1, 1)), (False, (2, 2, 1))]):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=cubic).repeat(rep)
        eps = rng.uniform(-strain, strain) * np.eye(3) + rng.uniform(-strain / 3, strain / 3, (3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        atoms.rattle(rattle, seed=seed * 100 + k)
        atoms.info["id"] = f"cu{k}"
        out.append(atoms)
    return out


@pytest.fixture
def cu_cells() -> list[Atoms]:
    return distorted_cu()


@pytest.fixture
def make_cu():
    """``make_cu(seed, strain, rattle)`` -> distorted Cu cells (see :func:`distorted_cu`)."""
    return distorted_cu

"""Energy model: per-element reference energies + learned per-atom energies;
forces and stress by autograd."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from crystalgnn_plugins.encoders.base import Encoder
from crystalgnn_plugins.graph import CrystalGraph
from crystalgnn_plugins.models.base import CrystalModel, _mlp, pool_sum
from crystalgnn_plugins.models.repulsion import (
    DEFAULT_FLOOR_LOWER,
    DEFAULT_FLOOR_UPPER,
    DEFAULT_INNER,
    DEFAULT_OUTER,
    CoreRepulsion,
    DistanceFloor,
)

MAX_Z = 118


class EnergyModel(CrystalModel):
    """Total energy ``E = sum_i (e_ref[Z_i] + shift + scale * MLP(h_i))`` (eV).

    ``forces = -dE/dr`` (eV/Å) and ``stress = (1/V) dE/d(eps)`` (eV/Å³, ASE's sign:
    negative under compression) under a symmetric strain ``eps`` applied to
    positions and cell, both by autograd.

    An atom with no neighbour within the cutoff keeps only its element
    embedding: its energy is its reference energy plus the learned constant of
    an isolated atom of that element, and the force on it is zero.

    With ``core_repulsion=True`` each atom also gets its share of the ZBL screened
    nuclear repulsion of pairs closer than 0.4 of their covalent bond length
    (:class:`~crystalgnn_plugins.models.repulsion.CoreRepulsion`), so that the
    energy rises steeply where the training data have no pairs. With
    ``network_floor=True`` the encoder sees no pair closer than 0.35 of its covalent
    bond length (:class:`~crystalgnn_plugins.models.repulsion.DistanceFloor`), so
    below that the learned energy is flat and only the repulsion acts.

    Args:
        hidden, num_hidden: width and number of hidden layers of the per-atom MLP.
        core_repulsion: add the ZBL core repulsion (fixed, no parameters).
        network_floor: floor the distances the encoder sees (fixed, no parameters).
    """

    model_type = "energy"
    units = {"energy": "eV", "energies": "eV", "forces": "eV/Å", "stress": "eV/Å^3"}

    def __init__(
        self,
        encoder: Encoder | str = "smooth_cgcnn",
        encoder_kwargs: dict[str, Any] | None = None,
        elements: Sequence[str] | None = None,
        *,
        hidden: int = 64,
        num_hidden: int = 2,
        core_repulsion: bool = False,
        network_floor: bool = False,
    ):
        super().__init__(encoder, encoder_kwargs, elements)
        self.hidden = hidden
        self.num_hidden = num_hidden
        self.core_repulsion: CoreRepulsion | None = None
        self.set_core_repulsion(core_repulsion)
        self.network_floor: DistanceFloor | None = None
        self.set_network_floor(network_floor)
        self.head = _mlp(self.encoder.out_features, hidden, num_hidden)
        self.register_buffer("reference_energies", torch.zeros(MAX_Z + 1))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("shift", torch.tensor(0.0))

    def _readout_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"hidden": self.hidden, "num_hidden": self.num_hidden}
        if self.core_repulsion is not None:  # models saved without it load unchanged
            config["core_repulsion"] = True
        if self.network_floor is not None:
            config["network_floor"] = True
        return config

    def set_network_floor(self, enabled: bool, lower: float | None = None, upper: float | None = None) -> None:
        """Switch the encoder's distance floor on or off. ``lower``/``upper``: its range as
        fractions of the covalent bond length (default 0.3-0.4; saved with the weights).
        Structures whose pairs are all longer than ``upper`` bond lengths predict the same."""
        if not enabled:
            self.network_floor = None
            return
        floor = DistanceFloor(DEFAULT_FLOOR_LOWER if lower is None else lower,
                              DEFAULT_FLOOR_UPPER if upper is None else upper)
        try:
            floor = floor.to(device=next(self.parameters()).device)
        except StopIteration:
            pass
        self.network_floor = floor

    def set_core_repulsion(self, enabled: bool, inner: float | None = None, outer: float | None = None) -> None:
        """Switch the ZBL core repulsion on or off (e.g. before fine-tuning a model
        trained without it; the learned part then adapts to it). ``inner``/``outer``:
        switching range as fractions of the covalent bond length (default 0.2-0.4;
        saved with the weights).

        Raises ``ValueError`` if the encoder's cutoff is shorter than the range of the
        repulsion for the model's elements; warns if the encoder caps the neighbours
        (a pair's two directed edges could then be cut unevenly)."""
        if not enabled:
            self.core_repulsion = None
            return
        repulsion = CoreRepulsion(
            DEFAULT_INNER if inner is None else inner, DEFAULT_OUTER if outer is None else outer
        )
        reach = repulsion.reach(self.elements)
        if self.cutoff < reach:
            raise ValueError(f"core repulsion acts up to {reach:.2f} Å for these elements, beyond the "
                             f"encoder's cutoff of {self.cutoff} Å")
        if self.max_neighbors is not None:
            warnings.warn(f"the encoder keeps at most {self.max_neighbors} neighbours per atom: in very dense "
                          "structures a close pair may lose one of its two edges and half its repulsion", stacklevel=2)
        try:  # on the model's device and dtype
            ref = next(self.parameters())
            repulsion = repulsion.to(device=ref.device, dtype=ref.dtype)
        except StopIteration:
            pass
        self.core_repulsion = repulsion

    # -------------------------------------------------------- normalisation
    def fit_normalisation(
        self, numbers: Sequence[Sequence[int]], energies: Sequence[float], ridge: float = 1e-6
    ) -> np.ndarray:
        """Fit per-element reference energies (eV) to total energies by (ridge)
        least squares on the composition; set ``shift``/``scale`` to the mean and
        standard deviation of the per-atom residual. Returns the residuals (eV).
        (The core repulsion, if on, is not subtracted first: it is zero in all but
        the most compressed frames.)"""
        energies = np.asarray(energies, dtype=float)
        counts = np.zeros((len(numbers), MAX_Z + 1))
        for row, zs in enumerate(numbers):
            np.add.at(counts[row], np.asarray(zs, dtype=int), 1.0)
        present = counts.sum(0) > 0
        A = counts[:, present]
        ref = np.linalg.solve(A.T @ A + ridge * np.eye(A.shape[1]), A.T @ energies)
        full = np.zeros(MAX_Z + 1)
        full[present] = ref
        residual = energies - counts @ full
        per_atom = residual / counts.sum(1)
        self.reference_energies.copy_(torch.as_tensor(full))
        self.shift.fill_(0.0)
        self.scale.fill_(float(per_atom.std()) if len(per_atom) > 1 and per_atom.std() > 1e-8 else 1.0)
        return residual

    # ---------------------------------------------------------------- model
    def atomic_energies(self, graph: CrystalGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        """Per-atom energies ``(N,)`` in eV."""
        seen = edge_vectors if self.network_floor is None else self.network_floor(graph, edge_vectors)
        h = self.encoder(graph, seen)
        e = self.head(h).squeeze(-1) * self.scale + self.shift
        e = e + graph.element_lookup(self.reference_energies)
        if self.core_repulsion is not None:
            e = e + self.core_repulsion(graph, edge_vectors)
        return e

    def forward(
        self,
        graph: CrystalGraph,
        *,
        compute_forces: bool = True,
        compute_stress: bool = True,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Energies, forces and stress of a (batched) graph.

        Returns a dict with ``energy`` ``(B,)`` eV, ``energies`` ``(N,)`` eV and, if
        asked, ``forces`` ``(N, 3)`` eV/Å and ``stress`` ``(B, 3, 3)`` eV/Å³ (NaN for
        crystals not periodic in all three directions). ``create_graph=True``
        keeps the graph of the derivatives (for training on forces/stress).
        """
        pos = graph.positions
        cell = graph.cell
        inputs: list[torch.Tensor] = []
        with torch.enable_grad():
            if compute_forces:
                pos = pos.detach().requires_grad_(True)
                inputs.append(pos)
            if compute_stress:
                strain = torch.zeros_like(cell, requires_grad=True)
                inputs.append(strain)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                pos = pos + torch.einsum("ni,nij->nj", pos, sym[graph.batch])
                cell = cell + torch.bmm(cell, sym)
            energies = self.atomic_energies(graph, graph.edge_vectors(pos, cell))
            energy = pool_sum(energies, graph.batch, graph.num_graphs)
            out = {"energy": energy, "energies": energies}
            if inputs:
                grads = torch.autograd.grad(
                    energy.sum(), inputs, create_graph=create_graph, allow_unused=True
                )
                grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
                if compute_forces:
                    out["forces"] = -grads[0]
                if compute_stress:
                    vol = graph.volumes(graph.cell)
                    safe = torch.where(vol > 0, vol, torch.ones_like(vol))
                    stress = grads[-1] / safe.view(-1, 1, 1)
                    out["stress"] = torch.where(
                        (vol > 0).view(-1, 1, 1), stress, torch.full_like(stress, float("nan"))
                    )
        return out

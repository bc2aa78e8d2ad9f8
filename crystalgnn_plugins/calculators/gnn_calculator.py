"""``GNNCalculator``: a learned energy model as an ASE calculator."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch
from ase.calculators.calculator import (
    CalculationFailed,
    Calculator,
    PropertyNotImplementedError,
    all_changes,
)
from ase.stress import full_3x3_to_voigt_6_stress

from crystalgnn_plugins.calculators.host_memory import reuse_host_memory
from crystalgnn_plugins.models.base import CrystalModel, evaluating
from crystalgnn_plugins.models.energy import EnergyModel


class GNNCalculator(Calculator):
    """ASE calculator for a crystalgnn-plugins energy model.

    Energies in eV, forces in eV/Å, stress in eV/Å³ (Voigt order, ASE's sign).

    Args:
        model: an :class:`EnergyModel`, the path of a saved model, or the name of
            a shipped model (``None``: the shipped default).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available, else CPU).
        dtype: ``torch.float32`` or ``torch.float64`` (default: the model's own).
        reuse_memory: on CPU, let the C allocator keep freed buffers for the next
            call (process-wide, see :func:`reuse_host_memory`): large cells then cost
            the same per atom as small ones, and the resident memory stays at its peak.

    Structures with elements the model does not know raise
    :class:`~crystalgnn_plugins.models.UnknownElementError`. An atom with no
    neighbour within the cutoff contributes its isolated-atom energy and feels
    no force (see :class:`EnergyModel`). Stress is only defined for cells
    periodic in all three directions.
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        model: CrystalModel | str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        reuse_memory: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        from crystalgnn_plugins.models.pretrained import resolve_model

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if reuse_memory and self.device.type == "cpu":
            reuse_host_memory()
        self.model = resolve_model(model, device=self.device, dtype=dtype)
        if not isinstance(self.model, EnergyModel):
            raise TypeError(
                f"GNNCalculator needs an energy model, got a {type(self.model).__name__} "
                f"(model_type {self.model.model_type!r})"
            )
        self.dtype = next(self.model.parameters()).dtype

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        want_stress = "stress" in properties
        if want_stress and not atoms.pbc.all():
            raise PropertyNotImplementedError(
                "stress needs a cell periodic in all three directions "
                f"(pbc={atoms.pbc.tolist()})"
            )
        graph = self.model.graph(atoms)
        with evaluating(self.model):  # the caller's model keeps its own train/eval mode
            out = self.model(graph, compute_forces=True, compute_stress=bool(atoms.pbc.all()))
        energy = float(out["energy"].detach().cpu().double().sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["energies"].detach().cpu().double().numpy(),
            "forces": out["forces"].detach().cpu().double().numpy(),
        }
        if "stress" in out:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"][0].detach().cpu().double().numpy())
        bad = [k for k in ("energy", "forces", "stress") if k in self.results and not np.isfinite(self.results[k]).all()]
        if bad:  # never hand NaN/inf to an optimiser or MD silently
            self.results = {}
            raise CalculationFailed(f"{atoms.get_chemical_formula()}: the model gave non-finite {', '.join(bad)}")

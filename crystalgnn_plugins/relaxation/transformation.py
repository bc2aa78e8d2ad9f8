"""``RelaxTransformation``: relaxation with an energy model as a pymatgen transformation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pymatgen.transformations.transformation_abc import AbstractTransformation

__all__ = ["RelaxTransformation"]

_DTYPES = {"float32": "float32", "float64": "float64", "torch.float32": "float32", "torch.float64": "float64"}


class RelaxTransformation(AbstractTransformation):
    """Relax a ``Structure`` with a learned energy model (FIRE + ``FrechetCellFilter``,
    see :func:`crystalgnn_plugins.relaxation.relax`).

    ``apply_transformation(structure)`` returns a new, relaxed ``Structure`` whose
    ``properties`` gain ``"energy"`` (eV), ``"energy_per_atom"`` (eV/atom) and
    ``"relaxation"``: ``{"converged", "steps", "max_force", "residual", "fmax",
    "stress"}`` (eV/Å, eV/Å³ Voigt). Non-convergence is reported by a
    :class:`~crystalgnn_plugins.relaxation.NotConvergedWarning` and
    ``converged=False``; a structure that cannot be relaxed raises
    :class:`~crystalgnn_plugins.relaxation.RelaxationError`.

    Args:
        model: an ``EnergyModel``, a saved-model directory or a shipped model name
            (``None``: the shipped default). Resolved once, on first use. Only a
            path or name survives :meth:`as_dict`.
        fmax, steps, relax_cell, pressure: as in :func:`~crystalgnn_plugins.relaxation.relax`.
        device: torch device (default: CUDA if available, else CPU).
        dtype: ``"float32"``/``"float64"`` (or a torch dtype); default the model's.
    """

    def __init__(
        self,
        model: Any = None,
        fmax: float = 0.05,
        steps: int = 500,
        relax_cell: bool = True,
        pressure: float = 0.0,
        device: str | None = None,
        dtype: Any = None,
    ):
        self.model = model
        self.fmax = float(fmax)
        self.steps = int(steps)
        self.relax_cell = bool(relax_cell)
        self.pressure = float(pressure)
        self.device = None if device is None else str(device)
        if dtype is not None and str(dtype) not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = None if dtype is None else _DTYPES[str(dtype)]
        self._resolved = None

    def _energy_model(self):
        if self._resolved is None:
            import torch

            from crystalgnn_plugins.models.pretrained import resolve_model

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = getattr(torch, self.dtype) if self.dtype else None
            self._resolved = resolve_model(self.model, device=torch.device(device), dtype=dtype)
        return self._resolved

    def apply_transformation(self, structure):
        """The relaxed structure (a new object; ``structure`` is not modified)."""
        from crystalgnn_plugins.relaxation.api import relax

        result = relax(
            structure, self._energy_model(), fmax=self.fmax, steps=self.steps, relax_cell=self.relax_cell,
            pressure=self.pressure, device=self.device,
        )[0]
        out = result.structure
        out.properties = dict(out.properties or {})
        out.properties.update({
            "energy": result.energy,
            "energy_per_atom": result.energy_per_atom,
            "relaxation": {
                "converged": result.converged,
                "steps": result.steps,
                "max_force": result.max_force,
                "residual": result.residual,
                "fmax": self.fmax,
                "pressure_GPa": self.pressure,
                "stress": [float(x) for x in result.stress],
            },
        })
        return out

    @property
    def inverse(self) -> None:
        return None

    @property
    def is_one_to_many(self) -> bool:
        return False

    def __repr__(self) -> str:
        return (
            f"RelaxTransformation(model={self._model_name()!r}, fmax={self.fmax}, steps={self.steps}, "
            f"relax_cell={self.relax_cell}, pressure={self.pressure})"
        )

    # ------------------------------------------------------------ serialisation
    def _model_name(self) -> str | None:
        if self.model is None or isinstance(self.model, (str, os.PathLike)):
            return None if self.model is None else str(Path(self.model)) if isinstance(self.model, os.PathLike) else self.model
        return f"<in-memory {type(self.model).__name__}>"

    def as_dict(self) -> dict[str, Any]:
        """JSON dict. A model given as an object is recorded by description only
        (``model_in_memory: true``) and cannot be restored by :meth:`from_dict`."""
        in_memory = not (self.model is None or isinstance(self.model, (str, os.PathLike)))
        return {
            "@module": type(self).__module__,
            "@class": type(self).__name__,
            "model": self._model_name(),
            "model_in_memory": in_memory,
            "fmax": self.fmax,
            "steps": self.steps,
            "relax_cell": self.relax_cell,
            "pressure": self.pressure,
            "device": self.device,
            "dtype": self.dtype,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RelaxTransformation:
        if d.get("model_in_memory"):
            raise ValueError(
                f"this RelaxTransformation used an in-memory model ({d.get('model')}); "
                "save the model with save_model() and pass its path to restore it"
            )
        return cls(
            model=d.get("model"), fmax=d.get("fmax", 0.05), steps=d.get("steps", 500),
            relax_cell=d.get("relax_cell", True), pressure=d.get("pressure", 0.0), device=d.get("device"), dtype=d.get("dtype"),
        )

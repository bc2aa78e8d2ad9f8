"""Predictions and metrics of a model on records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from crystalgnn_plugins.metrics.regression import regression_metrics
from crystalgnn_plugins.models.base import CrystalModel
from crystalgnn_plugins.models.energy import EnergyModel
from crystalgnn_plugins.training.losses import EV_A3_TO_GPA


def predict(model: CrystalModel, structures: Sequence[Any], batch_size: int = 64, ids: Sequence[str] | None = None) -> dict[str, list]:
    """Model outputs for ``Atoms``/``Structure`` objects, as numpy arrays per structure.

    Energy models give ``energy`` (eV), ``forces`` (eV/Å) and ``stress``
    (eV/Å³, 3x3, NaN if not periodic); property models their target.
    """
    model.eval()
    out: dict[str, list] = {}
    ids = list(ids) if ids is not None else [None] * len(structures)
    for start in range(0, len(structures), batch_size):
        chunk = structures[start : start + batch_size]
        graph = model.graphs(chunk, ids[start : start + batch_size])
        if isinstance(model, EnergyModel):
            pred = model(graph, compute_forces=True, compute_stress=bool(graph.pbc.all()))
        else:
            with torch.no_grad():
                pred = model(graph)
        counts = graph.num_atoms.tolist()
        for key, value in pred.items():
            value = value.detach().cpu().double().numpy()
            if key in ("forces", "energies"):
                out.setdefault(key, []).extend(np.split(value, np.cumsum(counts)[:-1]))
            else:
                out.setdefault(key, []).extend(list(value))
    return out


def evaluate(model: CrystalModel, records: Sequence[Any], targets: Sequence[str], batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Metrics of ``model`` on labelled records.

    Property targets: MAE/RMSE/R² in the target's units. Energy models:
    ``energy_per_atom`` (eV/atom), ``forces`` (eV/Å, per component) and
    ``stress`` (GPa, per component) where labels exist, and with ``energies`` in
    ``targets`` ``site_energies`` (eV, per atom).
    """
    if not records:
        return {}
    pred = predict(model, [r.atoms for r in records], batch_size, [r.id for r in records])
    metrics: dict[str, dict[str, float]] = {}
    if isinstance(model, EnergyModel):
        n = np.array([len(r.atoms) for r in records], dtype=float)
        e_true = np.array([r.targets["energy"] for r in records], dtype=float)
        metrics["energy_per_atom"] = regression_metrics(e_true / n, np.asarray(pred["energy"]) / n)
        with_f = [k for k, r in enumerate(records) if r.targets.get("forces") is not None]
        if "forces" in targets and with_f:
            metrics["forces"] = regression_metrics(
                np.concatenate([np.asarray(records[k].targets["forces"]).ravel() for k in with_f]),
                np.concatenate([pred["forces"][k].ravel() for k in with_f]),
            )
        with_s = [k for k, r in enumerate(records) if r.targets.get("stress") is not None]
        if "stress" in targets and with_s:
            from crystalgnn_plugins.training.dataset import _voigt_to_3x3

            metrics["stress_gpa"] = regression_metrics(
                np.concatenate([_voigt_to_3x3(records[k].targets["stress"]).ravel() for k in with_s]) * EV_A3_TO_GPA,
                np.concatenate([np.asarray(pred["stress"][k]).ravel() for k in with_s]) * EV_A3_TO_GPA,
            )
        with_e = [k for k, r in enumerate(records) if r.targets.get("energies") is not None]
        if "energies" in targets and with_e:
            metrics["site_energies"] = regression_metrics(
                np.concatenate([np.asarray(records[k].targets["energies"], dtype=float) for k in with_e]),
                np.concatenate([pred["energies"][k] for k in with_e]),
            )
    else:
        key = model.target
        metrics[key] = regression_metrics([r.targets[key] for r in records], pred[key])
    return metrics

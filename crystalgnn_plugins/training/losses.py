"""Losses, registered through the ``register_losses`` hook.

A loss is a callable ``loss(pred, target) -> scalar tensor`` on the dicts the
model returns and the batch carries. Targets may come with masks
(``"<key>_mask"``) marking which structures/atoms have that label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: eV/Å³ -> GPa
EV_A3_TO_GPA = 160.21766208


def _pointwise(kind: str, pred: torch.Tensor, target: torch.Tensor, delta: float) -> torch.Tensor:
    if kind == "mae":
        return (pred - target).abs()
    if kind == "mse":
        return (pred - target) ** 2
    if kind == "huber":
        return F.huber_loss(pred, target, reduction="none", delta=delta)
    raise ValueError(f"unknown pointwise loss {kind!r}; use mae, mse or huber")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(values)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


class PropertyLoss:
    """Pointwise loss on one scalar target ``key``, divided by ``scale`` first
    (the target standard deviation, so the loss is on normalised values)."""

    kind = "mse"

    def __init__(self, key: str = "y", scale: float = 1.0, delta: float = 1.0):
        self.key, self.scale, self.delta = key, float(scale), delta

    def __call__(self, pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
        values = _pointwise(self.kind, pred[self.key] / self.scale, target[self.key] / self.scale, self.delta)
        return _masked_mean(values, target.get(f"{self.key}_mask"))


class MAELoss(PropertyLoss):
    """Mean absolute error."""

    kind = "mae"


class MSELoss(PropertyLoss):
    """Mean squared error."""

    kind = "mse"


class HuberLoss(PropertyLoss):
    """Huber loss (quadratic below ``delta``, linear above)."""

    kind = "huber"


class EnergyForceStressLoss:
    """Weighted ``w_E L(E/N) + w_F L(F) + w_S L(sigma) + w_e L(e_i)`` for potentials.

    Energies per atom (eV/atom), force components (eV/Å), stress components in
    GPa, and, with ``site_energy_weight``, per-atom energies ``e_i`` (eV; e.g. a
    teacher's site energies, target key ``energies``); ``L`` is ``mae``, ``mse``
    or ``huber``. Terms whose labels are absent (masked out) contribute nothing.
    ``scale`` divides energies and forces (eV) so that the loss is in normalised units.
    """

    def __init__(
        self,
        energy_weight: float = 1.0,
        force_weight: float = 1.0,
        stress_weight: float = 0.1,
        kind: str = "mse",
        delta: float = 0.1,
        scale: float = 1.0,
        site_energy_weight: float = 0.0,
    ):
        self.energy_weight, self.force_weight, self.stress_weight = energy_weight, force_weight, stress_weight
        self.site_energy_weight = site_energy_weight
        self.kind, self.delta, self.scale = kind, delta, float(scale)

    def terms(self, pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The unweighted terms (only those that can be computed and are weighted)."""
        out = {}
        n = target["num_atoms"].to(pred["energy"].dtype)
        out["energy"] = _masked_mean(
            _pointwise(self.kind, pred["energy"] / n / self.scale, target["energy"] / n / self.scale, self.delta),
            target.get("energy_mask"),
        )
        if self.force_weight and "forces" in pred and "forces" in target:
            out["forces"] = _masked_mean(
                _pointwise(self.kind, pred["forces"] / self.scale, target["forces"] / self.scale, self.delta),
                target.get("forces_mask"),
            )
        if self.site_energy_weight and "energies" in pred and "energies" in target:
            out["energies"] = _masked_mean(
                _pointwise(self.kind, pred["energies"] / self.scale, target["energies"] / self.scale, self.delta),
                target.get("energies_mask"),
            )
        if self.stress_weight and "stress" in pred and "stress" in target:
            p = torch.nan_to_num(pred["stress"]) * EV_A3_TO_GPA
            out["stress"] = _masked_mean(
                _pointwise(self.kind, p, target["stress"] * EV_A3_TO_GPA, self.delta), target.get("stress_mask")
            )
        return out

    def __call__(self, pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
        t = self.terms(pred, target)
        loss = self.energy_weight * t["energy"]
        if "forces" in t:
            loss = loss + self.force_weight * t["forces"]
        if "stress" in t:
            loss = loss + self.stress_weight * t["stress"]
        if "energies" in t:
            loss = loss + self.site_energy_weight * t["energies"]
        return loss


def build_loss(name: str, **kwargs) -> object:
    """A loss from the registry by name."""
    from crystalgnn_plugins.plugins import get_registry

    return get_registry("losses").get(name)(**kwargs)

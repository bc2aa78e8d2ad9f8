"""Property model: encoder -> mean pooling -> MLP (CGCNN's readout)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from crystalgnn_plugins.encoders.base import Encoder
from crystalgnn_plugins.graph import CrystalGraph
from crystalgnn_plugins.models.base import CrystalModel, pool_mean


class PropertyModel(CrystalModel):
    """Predicts one scalar property per crystal.

    Atom features are mean-pooled and passed through ``softplus -> Linear ->
    softplus`` and ``num_hidden - 1`` more hidden layers to one output, as in
    CGCNN. An ``extensive`` target is modelled per atom and multiplied by the
    number of atoms, so a supercell gets a proportionally larger value.

    Args:
        target: name of the property (key of the output dict).
        target_units: its units, e.g. ``"eV/atom"``.
        extensive: whether the property scales with the number of atoms.
        hidden: width of the hidden layers; ``num_hidden``: their number.
        mean, std: target normalisation (of the per-atom value if extensive),
            normally set by :meth:`fit_normalisation`.
    """

    model_type = "property"

    def __init__(
        self,
        encoder: Encoder | str = "cgcnn",
        encoder_kwargs: dict[str, Any] | None = None,
        elements: Sequence[str] | None = None,
        *,
        target: str = "y",
        target_units: str = "",
        extensive: bool = False,
        hidden: int = 128,
        num_hidden: int = 1,
        mean: float = 0.0,
        std: float = 1.0,
    ):
        super().__init__(encoder, encoder_kwargs, elements)
        self.target = target
        self.target_units = target_units
        self.extensive = extensive
        self.hidden = hidden
        self.num_hidden = num_hidden
        layers: list[nn.Module] = [nn.Softplus(), nn.Linear(self.encoder.out_features, hidden), nn.Softplus()]
        for _ in range(num_hidden - 1):
            layers += [nn.Linear(hidden, hidden), nn.Softplus()]
        layers.append(nn.Linear(hidden, 1))
        self.head = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    @property
    def units(self) -> dict[str, str]:  # type: ignore[override]
        return {self.target: self.target_units}

    def _readout_config(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "target_units": self.target_units,
            "extensive": self.extensive,
            "hidden": self.hidden,
            "num_hidden": self.num_hidden,
        }

    def fit_normalisation(self, values: Sequence[float], num_atoms: Sequence[int]) -> None:
        """Set the target mean and standard deviation from training values."""
        y = np.asarray(values, dtype=float)
        if self.extensive:
            y = y / np.asarray(num_atoms, dtype=float)
        self.mean.fill_(float(y.mean()))
        self.std.fill_(float(y.std()) if len(y) > 1 and y.std() > 0 else 1.0)

    def forward(self, graph: CrystalGraph) -> dict[str, torch.Tensor]:
        """``{target: (B,)}`` in ``target_units``."""
        h = self.encoder(graph, graph.edge_vectors())
        pooled = pool_mean(h, graph.batch, graph.num_graphs)
        y = self.head(pooled).squeeze(-1) * self.std + self.mean
        if self.extensive:
            y = y * graph.num_atoms.to(y.dtype)
        return {self.target: y}

"""The encoder interface: a crystal graph in, per-atom features out."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from crystalgnn_plugins.graph import CrystalGraph


class Encoder(nn.Module):
    """Base class of all encoders (built-in and plugins).

    Subclasses set ``cutoff`` (Å), ``max_neighbors`` (``None`` for smooth
    encoders) and ``out_features``, store their init kwargs with
    :meth:`save_config` and implement :meth:`forward`.
    """

    cutoff: float
    max_neighbors: int | None = None
    out_features: int
    #: True if the encoder's output is a smooth function of positions (no
    #: hard neighbour truncation, envelope at the cutoff): needed for potentials.
    smooth: bool = False

    def save_config(self, **kwargs: Any) -> None:
        """Remember the JSON-serialisable init kwargs (used by save/load)."""
        self._config = dict(kwargs)

    def get_config(self) -> dict[str, Any]:
        """Init kwargs that rebuild this encoder: ``type(self)(**get_config())``."""
        return dict(getattr(self, "_config", {}))

    def forward(self, graph: CrystalGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        """Per-atom features ``(N, out_features)`` from the graph and its edge vectors (Å)."""
        raise NotImplementedError


def build_encoder(name: str, **kwargs: Any) -> Encoder:
    """Build a registered encoder by name (built-in or from a plugin)."""
    from crystalgnn_plugins.plugins import get_registry

    cls = get_registry("encoders").get(name)
    encoder = cls(**kwargs)
    if not isinstance(encoder, Encoder):
        raise TypeError(f"encoder {name!r} ({cls!r}) is not a crystalgnn_plugins.encoders.Encoder")
    return encoder


def encoder_name(encoder: Encoder) -> str:
    """The registry name of an encoder instance (its class must be registered)."""
    from crystalgnn_plugins.plugins import get_registry

    registry = get_registry("encoders")
    for entry in registry.entries():
        if entry.obj is type(encoder):
            return entry.name
    raise ValueError(
        f"encoder class {type(encoder).__qualname__} is not registered; register it through the "
        f"register_encoders hook so models using it can be saved and loaded "
        f"(registered: {', '.join(registry.names())})"
    )

"""Radial bases and cutoff envelopes."""

from __future__ import annotations

import torch
from torch import nn


class GaussianExpansion(nn.Module):
    """CGCNN's Gaussian distance expansion ``exp(-(d - mu_k)^2 / var^2)``.

    Centres from ``dmin`` to ``dmax`` (Å) every ``step`` Å; ``var`` defaults to ``step``.
    """

    def __init__(self, dmin: float = 0.0, dmax: float = 8.0, step: float = 0.2, var: float | None = None):
        super().__init__()
        n = int(round((dmax - dmin) / step)) + 1
        self.register_buffer("centers", torch.linspace(dmin, dmax, n), persistent=False)
        self.var = step if var is None else var
        self.num_features = n

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        centers = self.centers.to(d.dtype)
        return torch.exp(-((d.unsqueeze(-1) - centers) ** 2) / self.var**2)


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff ``u(d)`` (DimeNet, p=6): 1 at d=0, 0 with zero first and second
    derivatives at the cutoff (Å), exactly 0 beyond."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = cutoff
        self.p = p

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = d / self.cutoff
        u = (
            1
            - (p + 1) * (p + 2) / 2 * x**p
            + p * (p + 2) * x ** (p + 1)
            - p * (p + 1) / 2 * x ** (p + 2)
        )
        return torch.where(x < 1, u, torch.zeros_like(u))

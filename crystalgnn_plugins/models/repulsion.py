"""Core repulsion: the Ziegler-Biersack-Littmark (ZBL) screened nuclear repulsion,
switched off smoothly before bonding distances.

A learned potential sees almost no pairs closer than ~0.6 of their bond length
(in the default potential's teacher data 0.14 % of the frames have one, none below 0.39),
so its energy there is an extrapolation and may fall instead of rising (atoms
that collapse onto each other in hot MD or in a relaxation from a bad start).
Adding the ZBL pair energy below that range makes the energy rise steeply as two
nuclei approach, whatever the network does; the network learns the rest.

Pair energy (eV), with ``r`` in Å and ``x = r / a``::

    V(r) = k Z_i Z_j / r * phi(x),    a = 0.46850 / (Z_i^0.23 + Z_j^0.23)
    phi(x) = 0.18175 e^(-3.19980 x) + 0.50986 e^(-0.94229 x)
           + 0.28022 e^(-0.40290 x) + 0.02817 e^(-0.20162 x),    k = 14.399645 eV Å

times a switch that is 1 below ``inner * (R_i + R_j)`` and 0 above
``outer * (R_i + R_j)`` (``R``: covalent radii, Cordero et al. 2008, as in
``ase.data``), a quintic smoothstep in between (energy, forces and their
derivatives continuous).
"""

from __future__ import annotations

import torch
from ase.data import atomic_numbers, covalent_radii
from torch import nn

from crystalgnn_plugins.graph import CrystalGraph

COULOMB_EV_A = 14.399645
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
#: switch range as fractions of the sum of covalent radii (C-C 0.30-0.61 Å, Si-Si 0.44-0.89 Å,
#: Ti-O 0.45-0.90 Å): below the closest pair of the default potential's teacher data (0.39 of
#: the bond length in one frame of 20,000 sampled), so the repulsion never contradicts the
#: teacher there (on the default potential's 3,704 test frames: no change at all; with 0.3-0.6
#: the force MAE rose from 139 to 191 meV/Å on 9 frames whose teacher is soft at short range)
DEFAULT_INNER, DEFAULT_OUTER = 0.2, 0.4


def zbl_pair_energy(z_i: torch.Tensor, z_j: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Unswitched ZBL energy (eV) of pairs with atomic numbers ``z_i``, ``z_j``
    (float, may be fractional for soft species) at distances ``r`` (Å)."""
    a = 0.46850 / (z_i.pow(0.23) + z_j.pow(0.23))
    x = r / a
    phi = sum(c * torch.exp(-e * x) for c, e in zip(ZBL_COEFFICIENTS, ZBL_EXPONENTS))
    return COULOMB_EV_A * z_i * z_j / r * phi


def smooth_switch(r: torch.Tensor, r_on: torch.Tensor, r_off: torch.Tensor) -> torch.Tensor:
    """1 for ``r <= r_on``, 0 for ``r >= r_off``, quintic smoothstep in between."""
    t = ((r - r_on) / (r_off - r_on)).clamp(0.0, 1.0)
    return 1.0 - t * t * t * (10.0 - 15.0 * t + 6.0 * t * t)


class CoreRepulsion(nn.Module):
    """Per-atom ZBL core-repulsion energies (eV) from a graph's edges (half of each
    pair energy to the centre atom of each directed edge; both directions are edges).
    With soft species (``graph.species_weights``) the atomic number and covalent
    radius of an atom are their weighted means."""

    def __init__(self, inner: float = DEFAULT_INNER, outer: float = DEFAULT_OUTER):
        super().__init__()
        if not 0 < inner < outer:
            raise ValueError(f"core repulsion: need 0 < inner < outer, got inner={inner}, outer={outer}")
        self.register_buffer("radii", torch.as_tensor(covalent_radii, dtype=torch.float32), persistent=False)
        # saved with the weights, so that a checkpoint trained with the repulsion does not load
        # silently into a model without it (or the other way round), and a model keeps the
        # range it was trained with when the default changes
        self.register_buffer("switch_range", torch.tensor([float(inner), float(outer)], dtype=torch.float64))

    @property
    def inner(self) -> float:
        """Fraction of the covalent bond length below which the repulsion is whole."""
        return float(self.switch_range[0])

    @property
    def outer(self) -> float:
        """Fraction of the covalent bond length above which the repulsion is zero."""
        return float(self.switch_range[1])

    def reach(self, elements: list[str] | None = None) -> float:
        """Largest distance (Å) at which the repulsion acts for these elements (all if ``None``)."""
        radius = max(covalent_radii[atomic_numbers[e]] for e in elements) if elements else float(max(covalent_radii))
        return 2.0 * self.outer * radius

    def forward(self, graph: CrystalGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        dtype = edge_vectors.dtype
        radii = self.radii.to(device=edge_vectors.device, dtype=dtype)  # also when added after .to(device)
        if graph.species_weights is not None:
            w = graph.species_weights.to(dtype)
            z = w @ torch.arange(w.shape[-1], device=w.device, dtype=dtype)
            rad = w @ radii[: w.shape[-1]]
        else:
            z = graph.atomic_numbers.to(dtype)
            rad = radii[graph.atomic_numbers]
        i, j = graph.edge_index
        r = torch.linalg.norm(edge_vectors, dim=-1)
        bond = rad[i] + rad[j]
        near = r < self.outer * bond  # only these pairs contribute; the rest is exactly 0
        out = torch.zeros(z.shape[0], dtype=dtype, device=z.device)
        if bool(near.any()):
            i, j, r, bond = i[near], j[near], r[near], bond[near]
            pair = zbl_pair_energy(z[i], z[j], r) * smooth_switch(r, self.inner * bond, self.outer * bond)
            out = out.index_add(0, i, 0.5 * pair)
        return out

    def extra_repr(self) -> str:
        return f"inner={self.inner:.4g}, outer={self.outer:.4g}"

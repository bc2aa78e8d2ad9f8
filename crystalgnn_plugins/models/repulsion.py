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

:class:`DistanceFloor` is the other half of the hand-over: the learned part sees
pairs closer than ``upper * (R_i + R_j)`` smoothly lengthened, and every pair
closer than ``lower * (R_i + R_j)`` at the same length, so below that range the
network's energy is flat and its force zero, whatever it extrapolates; the ZBL
term alone pushes the atoms apart.
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
#: range of the network's distance floor, same units: the closest teacher pair (0.39) is
#: just inside its upper end, so no training frame is changed measurably
DEFAULT_FLOOR_LOWER, DEFAULT_FLOOR_UPPER = 0.3, 0.4


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


def pair_bond_lengths(graph: CrystalGraph, radii: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Sum of the covalent radii (Å) of the two atoms of each edge; with soft species
    (``graph.species_weights``) an atom's radius is the weighted mean."""
    radii = radii.to(device=graph.atomic_numbers.device, dtype=dtype)
    if graph.species_weights is not None:
        w = graph.species_weights.to(dtype)
        rad = w @ radii[: w.shape[-1]]
    else:
        rad = radii[graph.atomic_numbers]
    i, j = graph.edge_index
    return rad[i] + rad[j]


def smooth_floor(r: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``r`` for ``r >= upper``, the constant ``(lower + upper) / 2`` for ``r <= lower``,
    in between the integral of a quintic smoothstep (so the result is C^3 in ``r``)."""
    half = 0.5 * (upper - lower)
    mid = lower + half
    u = ((r - lower) / (upper - lower)).clamp(0.0, 1.0)
    ramp = 2.0 * half * u.pow(4) * (u * u - 3.0 * u + 2.5)  # ∫ smoothstep, 0 at u=0, half at u=1
    return torch.where(r >= upper, r, mid + ramp)


class DistanceFloor(nn.Module):
    """Edge vectors as the learned part of an energy model sees them: pairs closer than
    ``upper`` times their covalent bond length are lengthened smoothly, pairs closer than
    ``lower`` times it all look ``(lower + upper) / 2`` times it long. Directions are kept.

    Below ``lower`` the network's energy no longer depends on the distance, so its
    extrapolation there (no training pair is that close) cannot produce a spike or a
    pull; :class:`CoreRepulsion` governs that range. Predictions of structures whose
    pairs are all longer than ``upper`` times their bond length are unchanged."""

    def __init__(self, lower: float = DEFAULT_FLOOR_LOWER, upper: float = DEFAULT_FLOOR_UPPER):
        super().__init__()
        if not 0 < lower < upper:
            raise ValueError(f"distance floor: need 0 < lower < upper, got lower={lower}, upper={upper}")
        self.register_buffer("radii", torch.as_tensor(covalent_radii, dtype=torch.float32), persistent=False)
        # saved with the weights, like CoreRepulsion.switch_range
        self.register_buffer("floor_range", torch.tensor([float(lower), float(upper)], dtype=torch.float64))

    @property
    def lower(self) -> float:
        """Fraction of the covalent bond length below which the network sees a constant distance."""
        return float(self.floor_range[0])

    @property
    def upper(self) -> float:
        """Fraction of the covalent bond length above which distances are unchanged."""
        return float(self.floor_range[1])

    def forward(self, graph: CrystalGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        bond = pair_bond_lengths(graph, self.radii, edge_vectors.dtype)
        r = torch.linalg.norm(edge_vectors, dim=-1)
        near = r < self.upper * bond
        if not bool(near.any()):
            return edge_vectors
        safe = torch.where(near, r, torch.ones_like(r)).clamp_min(1e-12)
        lengthened = smooth_floor(safe, self.lower * bond, self.upper * bond)
        factor = torch.where(near, lengthened / safe, torch.ones_like(r))
        return edge_vectors * factor.unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"lower={self.lower:.4g}, upper={self.upper:.4g}"


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
        if graph.species_weights is not None:
            w = graph.species_weights.to(dtype)
            z = w @ torch.arange(w.shape[-1], device=w.device, dtype=dtype)
        else:
            z = graph.atomic_numbers.to(dtype)
        i, j = graph.edge_index
        r = torch.linalg.norm(edge_vectors, dim=-1)
        bond = pair_bond_lengths(graph, self.radii, dtype)  # also when added after .to(device)
        near = r < self.outer * bond  # only these pairs contribute; the rest is exactly 0
        out = torch.zeros(z.shape[0], dtype=dtype, device=z.device)
        if bool(near.any()):
            i, j, r, bond = i[near], j[near], r[near], bond[near]
            pair = zbl_pair_energy(z[i], z[j], r) * smooth_switch(r, self.inner * bond, self.outer * bond)
            out = out.index_add(0, i, 0.5 * pair)
        return out

    def extra_repr(self) -> str:
        return f"inner={self.inner:.4g}, outer={self.outer:.4g}"

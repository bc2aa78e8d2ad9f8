"""The equivariant periodic network of the generator.

Input: a batch of crystals as (soft) species, fractional coordinates and lattice
rows, plus per-crystal time and condition vectors. The network passes messages
over every pair of atoms of a crystal, with edge features that depend only on
the wrapped fractional difference (Fourier features: invariant to the choice
of periodic image of either atom and to translations), on the Cartesian length
of the shortest such difference and on the rotation-invariant Gram matrix of
the lattice. It outputs actions aggregated from the edges (Klipfel et al. 2022):

- ``frac_velocity`` (N, 3): per-atom displacement of fractional coordinates,
  aggregated from per-edge actions along the smooth periodic directions
  ``Σ_j Σ_k w_ijk sin(2πk d_ij) / 2πk`` (``d_ij = f_j - f_i``; for small ``d`` this is
  ``(Σ_k w_ijk) d_ij``, a pull towards atom ``j``). Unlike ``wrap(d_ij)`` these
  directions are continuous where two atoms are half a lattice vector apart (as in
  perovskites), so the flow can settle there. In fractional coordinates the
  displacement is invariant; as a Cartesian vector it rotates with the crystal;
- ``lattice_action`` (B, 3, 3): a symmetric Cartesian matrix
  ``Σ_ij u_ij r̂_ij r̂_ijᵀ + Σ_k c_k â_k â_kᵀ`` (edges and lattice directions), which
  transforms as ``R g Rᵀ`` under a rotation ``R``;
- ``species_logits`` (N, K): invariant.

With ``image_rbf > 0`` each pair also sees *all* periodic images of its partner
within ``image_cutoff``: radial basis functions of every image distance, summed
over the images (invariant to the image chosen for either atom, smooth), and the
displacement gets matching directions ``Σ_n φ_b(|r_n|) (d_ij + n)`` towards the
nearby images. Without them a pair is one edge at the wrapped difference, which in
small or skewed cells is not the nearest image and misses bonds to other images
(carbon_24: 20 % of the bonds shorter than 1.8 Å).

All outputs are invariant to permutations of atoms within a crystal.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from crystalgnn_plugins.generation.lattice import wrap


def dense_edges(num_atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair ``(i, j)``, ``i != j``, of atoms of the same crystal.

    Returns ``edge_index`` (2, E) over the flattened atoms and the crystal
    index of each edge (E,).
    """
    n = num_atoms.long()
    device = n.device
    ptr = torch.cumsum(n, 0) - n
    pairs = n * n
    edge_batch = torch.repeat_interleave(torch.arange(len(n), device=device), pairs)
    local = torch.arange(int(pairs.sum()), device=device) - torch.repeat_interleave(torch.cumsum(pairs, 0) - pairs, pairs)
    n_e = n[edge_batch]
    i = ptr[edge_batch] + local // n_e
    j = ptr[edge_batch] + local % n_e
    keep = i != j
    return torch.stack([i[keep], j[keep]]), edge_batch[keep]


def _scatter_mean(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    out = values.new_zeros((size, *values.shape[1:])).index_add_(0, index, values)
    count = values.new_zeros(size).index_add_(0, index, values.new_ones(index.shape[0])).clamp_min(1)
    return out / count.view(-1, *([1] * (values.dim() - 1)))


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


class _GaussianBasis(nn.Module):
    def __init__(self, start: float, stop: float, num: int):
        super().__init__()
        self.register_buffer("centres", torch.linspace(start, stop, num), persistent=False)
        self.width = (stop - start) / (num - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(((x.unsqueeze(-1) - self.centres.to(x.dtype)) / self.width) ** 2))


def _image_offsets(lattice: torch.Tensor, cutoff: float, max_range: int = 2) -> torch.Tensor:
    """Integer image offsets (M, 3) that reach every periodic image within ``cutoff`` (Å)
    of a wrapped fractional difference (components in [-0.5, 0.5]) for all crystals of
    the batch: ``|n_k| <= cutoff / h_k + 0.5`` with ``h_k`` the spacing of the lattice
    planes, capped at ``max_range`` (only reached by very flat cells, early in sampling)."""
    with torch.no_grad():
        volume = torch.linalg.det(lattice).abs()
        cross = torch.stack([torch.linalg.cross(lattice[:, 1], lattice[:, 2]),
                             torch.linalg.cross(lattice[:, 2], lattice[:, 0]),
                             torch.linalg.cross(lattice[:, 0], lattice[:, 1])], 1)
        spacing = volume.unsqueeze(-1) / torch.linalg.norm(cross, dim=-1).clamp_min(1e-9)  # (B, 3)
        reach = torch.floor(cutoff / spacing.clamp_min(1e-6) + 0.5).amax(0).clamp(0, max_range).long().tolist()
    axes = [torch.arange(-r, r + 1, device=lattice.device, dtype=lattice.dtype) for r in reach]
    return torch.cartesian_prod(*axes).reshape(-1, 3)


class _MessageLayer(nn.Module):
    def __init__(self, hidden: int, edge_dim: int):
        super().__init__()
        self.edge = nn.Sequential(nn.Linear(2 * hidden + edge_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.node = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h, edge_index, edge_attr):
        i, j = edge_index
        # edge(cat[h_i, h_j, e]) with the first linear map split by blocks: the node
        # parts are computed once per atom and gathered (same parameters, fewer flops)
        first = self.edge[0]
        hidden = h.shape[-1]
        w = first.weight
        node_i = h @ w[:, :hidden].T
        node_j = h @ w[:, hidden : 2 * hidden].T
        # accumulated in one (E, H) buffer: the per-edge tensors dominate the memory traffic
        pre = torch.addmm(first.bias, edge_attr, w[:, 2 * hidden :].T)
        pre += node_i[i]
        pre += node_j[j]
        inplace = not torch.is_grad_enabled()  # sampling: no activations kept for backward
        m = F.silu(self.edge[2](F.silu(pre, inplace=inplace)), inplace=inplace)
        agg = _scatter_mean(m, i, h.shape[0])
        return h + self.node(torch.cat([self.norm(h), agg], -1)), m


class PeriodicActionNetwork(nn.Module):
    """Equivariant message passing over all atom pairs of periodic crystals.

    Args:
        num_species: size of the species vocabulary (one-hot or soft input).
        hidden: feature width.
        num_layers: message-passing layers.
        num_freqs: Fourier frequencies of the fractional differences.
        disp_freqs: periodic directions ``sin(2πk d)/2πk``, ``k = 1..disp_freqs``, of
            the per-atom displacements.
        heads: build the output heads (``False`` for an encoder: features only).
        cond_dim: width of the per-crystal condition vector (0 for none).
        image_rbf: radial functions of the image-summed pair features and
            displacement directions (0: off, one image per pair).
        image_cutoff: reach of the image-summed features, Å.
        edge_vectors: each edge also proposes a free displacement (3 fractional
            components computed from its invariant message), averaged like the others:
            the directions alone must build a small displacement out of long
            interatomic vectors, which a denoiser at small noise needs to do precisely.
    """

    def __init__(
        self,
        num_species: int,
        hidden: int = 128,
        num_layers: int = 4,
        num_freqs: int = 8,
        cond_dim: int = 0,
        disp_freqs: int = 3,
        heads: bool = True,
        image_rbf: int = 0,
        image_cutoff: float = 3.0,
        edge_vectors: bool = False,
    ):
        super().__init__()
        self.num_species, self.hidden, self.num_freqs, self.cond_dim = num_species, hidden, num_freqs, cond_dim
        self.disp_freqs, self.heads = disp_freqs, heads
        self.image_rbf, self.image_cutoff, self.edge_vectors = image_rbf, image_cutoff, edge_vectors
        if image_rbf:
            self.image_basis = _GaussianBasis(0.6, image_cutoff, image_rbf)  # Å
        self.register_buffer(
            "freqs", 2 * math.pi * torch.arange(1, num_freqs + 1, dtype=torch.float32), persistent=False
        )
        self.dist_abs = _GaussianBasis(0.0, 6.0, 16)  # Å
        self.dist_rel = _GaussianBasis(0.0, 2.0, 8)  # in units of (V/N)^(1/3)
        edge_dim = 6 * num_freqs + 16 + 8 + image_rbf
        self.species_in = nn.Linear(num_species, hidden)
        # per-crystal invariants: time (16 Fourier features), normalised Gram (6), log volume per atom, condition
        self.global_in = _mlp(16 + 6 + 1 + cond_dim, hidden, hidden)
        self.layers = nn.ModuleList(_MessageLayer(hidden, edge_dim) for _ in range(num_layers))
        self.pool_out = nn.Linear(hidden, hidden)
        if heads:  # an encoder (heads=False) only needs the features
            # per edge: weights of the displacement directions and of the lattice action
            # (image_rbf more: weights of the directions towards nearby images)
            # (3 more with edge_vectors: a free fractional displacement, last so that a flow
            # without them loads with zero weights there)
            self.edge_head = _mlp(hidden, hidden, disp_freqs + 1 + image_rbf + 3 * edge_vectors)
            self.cell_lattice_head = _mlp(2 * hidden, hidden, 6)
            self.species_head = _mlp(hidden, hidden, num_species)
            self.register_buffer(
                "disp_k", 2 * math.pi * torch.arange(1, disp_freqs + 1, dtype=torch.float32), persistent=False
            )

    def _time_features(self, t: torch.Tensor) -> torch.Tensor:
        k = torch.arange(1, 9, device=t.device, dtype=t.dtype)
        arg = math.pi * t.unsqueeze(-1) * k
        return torch.cat([torch.sin(arg), torch.cos(arg)], -1)

    def forward(
        self,
        species: torch.Tensor,
        frac: torch.Tensor,
        lattice: torch.Tensor,
        num_atoms: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Actions for a batch of crystals.

        Args:
            species: (N, K) one-hot or soft species.
            frac: (N, 3) fractional coordinates (any periodic image).
            lattice: (B, 3, 3) lattice vectors as rows, Å.
            num_atoms: (B,) atoms per crystal (the atoms are stored crystal by crystal).
            t: (B,) flow time in [0, 1].
            cond: (B, cond_dim) condition vectors.

        Returns:
            ``frac_velocity`` (N, 3), ``lattice_action`` (B, 3, 3) symmetric,
            ``species_logits`` (N, K), ``node_features`` (N, H), ``crystal_features`` (B, H).
        """
        num_crystals = lattice.shape[0]
        batch = torch.repeat_interleave(torch.arange(num_crystals, device=frac.device), num_atoms)
        edge_index, edge_batch = dense_edges(num_atoms)
        i, j = edge_index

        gram = lattice @ lattice.transpose(-1, -2)
        volume = torch.linalg.det(lattice).abs()
        per_atom = volume / num_atoms.to(volume.dtype)
        gram_n = gram / volume.pow(2 / 3).view(-1, 1, 1)
        gram_vec = torch.stack([gram_n[:, 0, 0], gram_n[:, 1, 1], gram_n[:, 2, 2], gram_n[:, 0, 1], gram_n[:, 0, 2], gram_n[:, 1, 2]], -1)
        globals_ = [self._time_features(t), gram_vec, torch.log(per_atom).unsqueeze(-1) - 2.5]
        if self.cond_dim:
            if cond is None:
                raise ValueError(f"this network expects a condition vector of width {self.cond_dim}")
            globals_.append(cond)
        g = self.global_in(torch.cat(globals_, -1))

        d = wrap(frac[j] - frac[i])
        arg = d.unsqueeze(-1) * self.freqs.to(d.dtype)  # (E, 3, F)
        fourier = torch.cat([torch.sin(arg), torch.cos(arg)], -1).flatten(1)
        r = torch.einsum("ea,eab->eb", d, lattice[edge_batch])
        dist = torch.linalg.norm(r, dim=-1)
        scale = per_atom.pow(1 / 3)[edge_batch]
        edge_parts = [fourier, self.dist_abs(dist), self.dist_rel(dist / scale)]
        image_dirs = None
        if self.image_rbf:
            offsets = _image_offsets(lattice, self.image_cutoff)
            dn = d.unsqueeze(1) + offsets  # (E, M, 3) every image of j near i
            rn = torch.einsum("ema,eab->emb", dn, lattice[edge_batch])
            d2 = (rn * rn).sum(-1)
            # the envelope vanishes (with its slope) at the cutoff: only the few images
            # inside it contribute, so the basis is evaluated for those alone
            e_near, m_near = torch.nonzero(d2 < self.image_cutoff**2, as_tuple=True)
            dist_n = torch.sqrt(d2[e_near, m_near] + 1e-12)  # (P,)
            envelope = 0.5 * (torch.cos(math.pi * dist_n / self.image_cutoff) + 1)
            phi = self.image_basis(dist_n) * envelope.unsqueeze(-1)  # (P, R)
            num_edges = d.shape[0]
            edge_parts.append(phi.new_zeros(num_edges, self.image_rbf).index_add(0, e_near, phi))
            per_image = phi.unsqueeze(-1) * dn[e_near, m_near].unsqueeze(1)  # (P, R, 3) fractional
            image_dirs = per_image.new_zeros(num_edges, self.image_rbf, 3).index_add(0, e_near, per_image)
        edge_attr = torch.cat(edge_parts, -1)

        h = self.species_in(species) + g[batch]
        m = None
        for layer in self.layers:
            h, m = layer(h, edge_index, edge_attr)

        pooled = self.pool_out(_scatter_mean(h, batch, num_crystals))
        if not self.heads:
            return {"node_features": h, "crystal_features": pooled}
        n_nodes = frac.shape[0]
        if m is None or m.shape[0] == 0:
            frac_velocity = torch.zeros_like(frac)
            edge_part = lattice.new_zeros(num_crystals, 3, 3)
        else:
            out = self.edge_head(m)
            w, u = out[:, : self.disp_freqs], out[:, self.disp_freqs]
            k = self.disp_k.to(d.dtype)
            directions = torch.sin(d.unsqueeze(-1) * k) / k  # (E, 3, K), smooth and periodic
            per_edge = (directions * w.unsqueeze(1)).sum(-1)
            if image_dirs is not None:
                images = out[:, self.disp_freqs + 1 : self.disp_freqs + 1 + self.image_rbf]
                per_edge = per_edge + torch.einsum("er,era->ea", images, image_dirs)
            if self.edge_vectors:
                per_edge = per_edge + out[:, -3:]
            frac_velocity = _scatter_mean(per_edge, i, n_nodes)
            unit = r / dist.clamp_min(1e-6).unsqueeze(-1)
            outer = unit.unsqueeze(-1) * unit.unsqueeze(-2) * u.view(-1, 1, 1)
            edge_part = _scatter_mean(outer, edge_batch, num_crystals)
        c = self.cell_lattice_head(torch.cat([pooled, g], -1))  # (B, 6)
        a = lattice
        directions = torch.stack([a[:, 0], a[:, 1], a[:, 2], a[:, 0] + a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 2]], 1)
        directions = directions / torch.linalg.norm(directions, dim=-1, keepdim=True).clamp_min(1e-6)
        cell_part = torch.einsum("bk,bki,bkj->bij", c, directions, directions)
        return {
            "frac_velocity": frac_velocity,
            "lattice_action": edge_part + cell_part,
            "species_logits": self.species_head(h),
            "node_features": h,
            "crystal_features": pooled,
        }

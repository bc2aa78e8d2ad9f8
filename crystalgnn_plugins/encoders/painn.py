"""PaiNN (Schütt, Unke & Gastegger, ICML 2021): an E(3)-equivariant message-passing
encoder with per-atom scalar features ``s_i`` (F) and vector features ``v_i`` (3, F).

Written from the paper. Departures, all keeping the model a smooth potential:

* radial filters use the sine basis ``sin(n pi d / r_c) / (d / r_c)`` multiplied by
  the polynomial envelope (no bias in the filter layer, so every filter vanishes with
  two derivatives at the cutoff);
* message and vector sums are divided by a constant ``avg_neighbors``;
* the vector norm fed to the update MLP is ``sqrt(|V v|^2 + norm_eps)``. With the
  paper's tiny epsilon the energy has a cusp (~|displacement|) wherever ``V v``
  vanishes by symmetry, e.g. at every centrosymmetric site of an ideal crystal, so
  forces jump there and finite-difference phonons are wrong. ``norm_eps = 1`` (features
  are O(1)) makes the energy quadratic around such points; the map is still a
  bijection of ``|V v|`` so the MLP sees the same information;
* the first layer skips the ``v_j * gate_vv`` term (``v = 0`` there: identical maths).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from crystalgnn_plugins.encoders.atom_features import atom_feature_table
from crystalgnn_plugins.encoders.base import Encoder
from crystalgnn_plugins.encoders.basis import PolynomialEnvelope
from crystalgnn_plugins.graph import CrystalGraph

#: squared edge lengths (Å^2) are clamped to at least this before the square root, so
#: a zero-length edge (forbidden by the graph builder anyway) gives no NaN
_MIN_D2 = 1e-12
#: the padded (N, D) edge layout is used while N * D <= _MAX_PADDING * E
_MAX_PADDING = 2.0


class _ScatterSum(torch.autograd.Function):
    """``out[n] = sum_{e: index[e] = n} x[e]``: ``index_add`` forward (about twice as
    fast on CPU as ``index_put`` with accumulation) that keeps only ``index`` for the
    backward pass (autograd's ``index_add`` also keeps ``x``: one more per-edge tensor
    per sum). The backward is a gather, itself differentiable (forces in the loss)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
        ctx.save_for_backward(index)
        return x.new_zeros((num, *x.shape[1:])).index_add_(0, index, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def _scatter_sum(x: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    """``out[n] = sum_{e: index[e] = n} x[e]`` (see :class:`_ScatterSum`)."""
    return _ScatterSum.apply(x, index, num)


#: edges per chunk of :class:`_GatedMessage` on the CPU: about this many floats (1 MB) per
#: per-edge temporary, so a chunk's temporaries stay in the cache (measured at 2,560 atoms:
#: 2**18 is 10 % faster than the unchunked autograd version, 2**22 is 15 % slower)
_CHUNK_FLOATS = 2**18
#: the same on GPUs, where small chunks would cost a kernel launch each
_CHUNK_FLOATS_GPU = 2**24


def _edge_chunks(num_edges: int, per_edge: int, device: torch.device) -> list[slice]:
    """Slices of at most ``_CHUNK_FLOATS // per_edge`` edges covering ``range(num_edges)``."""
    floats = _CHUNK_FLOATS if device.type == "cpu" else _CHUNK_FLOATS_GPU
    size = max(1, floats // max(1, per_edge))
    return [slice(a, min(a + size, num_edges)) for a in range(0, num_edges, size)] or [slice(0, 0)]


class _GatedMessage(torch.autograd.Function):
    """``out[n] = sum_{e: dst[e] = n} x[src[e]] * (rbf[e] @ weight.T)``: per-atom features
    ``x`` (N, ..., F) gathered along the edges, gated by a radial filter (E, F) broadcast
    over the middle axes, and summed at the edges' centres.

    Computed over chunks of edges, forward and backward, so no (E, ..., F) tensor is
    formed or kept for these sums: the backward pass keeps only the per-atom ``x``, the
    (E, R) radial basis, the weight and the indices, and recomputes the gathers and
    filters chunk by chunk. Autograd's version of the same sum keeps two per-edge tensors per
    product and forms full-size ones in the backward pass; for forces and stress of a
    large cell that is most of the memory. The backward is written in differentiable
    operations, so second derivatives (forces in a training loss) work.
    """

    @staticmethod
    def forward(ctx, x, rbf, weight, src, dst, num_dst: int):
        ctx.save_for_backward(x, rbf, weight, src, dst)
        middle = (1,) * (x.dim() - 2)
        out = x.new_zeros((num_dst, *x.shape[1:]))
        for sl in _edge_chunks(src.shape[0], math.prod(x.shape[1:]), x.device):
            gate = nn.functional.linear(rbf[sl], weight)
            out.index_add_(0, dst[sl], x.index_select(0, src[sl]) * gate.view(gate.shape[0], *middle, weight.shape[0]))
        return out

    @staticmethod
    def backward(ctx, grad):
        x, rbf, weight, src, dst = ctx.saved_tensors
        middle = (1,) * (x.dim() - 2)
        need_x, need_rbf, need_w = ctx.needs_input_grad[:3]
        # chunks accumulate in place, except when this backward is itself differentiated
        # (create_graph: its graph keeps per-edge tensors anyway) or runs under vmap
        # (batched gradients, e.g. jacobian(vectorize=True)): then one chunk, out of place
        chunked = not torch.is_grad_enabled() and not _is_batched(grad)
        chunks = _edge_chunks(src.shape[0], math.prod(x.shape[1:]), x.device) if chunked else [slice(0, src.shape[0])]
        grad_x = x.new_zeros(x.shape) if need_x else None
        grad_w = None
        grad_rbf = rbf.new_empty(rbf.shape) if need_rbf and len(chunks) > 1 else None
        for sl in chunks:
            g = grad.index_select(0, dst[sl])
            if need_x:
                gate = nn.functional.linear(rbf[sl], weight)
                contrib = g * gate.view(gate.shape[0], *middle, weight.shape[0])
                if chunked:
                    grad_x.index_add_(0, src[sl], contrib)
                else:
                    grad_x = grad_x.index_add(0, src[sl], contrib)
            if need_rbf or need_w:
                gg = g * x.index_select(0, src[sl])
                if middle:
                    gg = gg.sum(dim=tuple(range(1, x.dim() - 1)))
                if need_rbf:
                    if grad_rbf is None:  # one chunk
                        grad_rbf = gg @ weight
                    else:
                        grad_rbf[sl] = gg @ weight
                if need_w:
                    part = gg.transpose(0, 1) @ rbf[sl]
                    grad_w = part if grad_w is None else grad_w + part
        return grad_x, grad_rbf, grad_w, None, None, None


def _is_batched(t: torch.Tensor) -> bool:
    """Whether ``t`` is a vmap-batched tensor (batched gradients)."""
    functorch = getattr(torch._C, "_functorch", None)
    for name in ("is_batchedtensor", "is_legacy_batchedtensor"):  # torch.func / is_grads_batched
        check = getattr(functorch, name, None)
        if check is not None and check(t):
            return True
    return False


class SineBasis(nn.Module):
    """``sin(n pi d / r_c) / (d / r_c) * u(d)``, ``n = 1..num_radial``, with the
    polynomial envelope ``u``: the sine (Bessel j0) basis of PaiNN/DimeNet made
    dimensionless (values O(1); finite, ``n pi``, as d -> 0; zero beyond the cutoff)."""

    def __init__(self, cutoff: float, num_radial: int = 20, envelope_p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.num_features = int(num_radial)
        freq = torch.arange(1, num_radial + 1, dtype=torch.float64) * math.pi / self.cutoff
        self.register_buffer("frequencies", freq.to(torch.get_default_dtype()), persistent=False)
        self.envelope = PolynomialEnvelope(self.cutoff, envelope_p)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        freq = self.frequencies.to(dtype=d.dtype)
        d = d.unsqueeze(-1)
        return torch.sin(freq * d) * (self.cutoff * self.envelope(d) / d)  # one (E, R) product


class _Edges:
    """Edge data shared by all layers: ``index`` (2, E) and unit vectors ``unit`` (E, 3).

    ``sum_j x_ij r_hat_ij`` (per-edge ``x`` of shape (E, F)) is computed as one batched
    matmul over a padded per-centre layout ``(N, D, .)`` (D the largest degree) instead
    of an (E, 3, F) outer product and its reductions in the backward pass (about 15 % of
    the time and memory traffic of a layer). If padding would more than double the edge
    count (very uneven degrees in a batch) the plain outer product is used.
    """

    def __init__(self, edge_index: torch.Tensor, unit: torch.Tensor, num_nodes: int):
        self.index = edge_index
        self.unit = unit
        self.num_nodes = num_nodes
        i = edge_index[0]
        num_edges = i.shape[0]
        degree = torch.bincount(i, minlength=num_nodes)
        self.width = int(degree.max()) if num_edges else 0
        self.padded = num_nodes * self.width <= _MAX_PADDING * num_edges
        if self.padded:
            # position of each edge within its centre's row (edges need not be sorted)
            order = torch.argsort(i, stable=True)
            start = torch.cumsum(degree, 0) - degree
            slot = torch.empty_like(i)
            slot[order] = torch.arange(num_edges, device=i.device) - start[i[order]]
            self.flat = i * self.width + slot
            self.unit_padded = self.pad(unit).transpose(1, 2)  # (N, 3, D)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Per-edge rows ``(E, C)`` -> ``(N, D, C)``, zeros in the padding."""
        out = x.new_zeros((self.num_nodes * self.width, x.shape[-1]))  # index_put: saves no x
        return out.index_put((self.flat,), x).view(self.num_nodes, self.width, x.shape[-1])

    def sum_outer_unit(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_j r_hat_ij x_ij`` for per-edge ``x`` (E, F): ``(N, 3, F)``."""
        if self.padded:
            return torch.bmm(self.unit_padded, self.pad(x))
        return _scatter_sum(self.unit.unsqueeze(-1) * x.unsqueeze(1), self.index[0], self.num_nodes)


class _Message(nn.Module):
    """``x_ij = phi(s_j) * W(r_ij)`` split into gates; ``ds_i = sum_j x_s``,
    ``dv_i = sum_j v_j * x_vv + x_vs * r_hat_ij`` (divided by ``norm``)."""

    def __init__(self, features: int, num_radial: int, first: bool):
        super().__init__()
        self.features = features
        self.first = first
        n = 2 if first else 3  # the first layer has v = 0: no v_j gate
        self.phi = nn.Sequential(nn.Linear(features, features), nn.SiLU(), nn.Linear(features, n * features))
        self.filter = nn.Linear(num_radial, n * features, bias=False)

    def forward(self, s, v, rbf, edges: _Edges, norm: float):
        i, j = edges.index
        f = self.features
        phi = self.phi(s)
        weight = self.filter.weight

        def filt(k: int) -> torch.Tensor:
            # one contiguous (E, F) filter at a time: no (E, 3F) split/cat in the backward pass
            return nn.functional.linear(rbf, weight[k * f : (k + 1) * f])

        def message(x: torch.Tensor, k: int) -> torch.Tensor:
            """``sum_j x_j * W_k(r_ij)`` at each centre ``i``."""
            if self.training:  # plain autograd: faster for small training batches
                gated = x.index_select(0, j) * filt(k).view(-1, *([1] * (x.dim() - 2)), f)
                return _scatter_sum(gated, i, s.shape[0])
            # forces and stress of a given structure: chunked, keeps no per-edge tensor
            return _GatedMessage.apply(x, rbf, weight[k * f : (k + 1) * f], j, i, s.shape[0])

        ds = message(phi[:, :f], 0)
        dv = edges.sum_outer_unit(phi[:, f : 2 * f].index_select(0, j) * filt(1))
        if not self.first:
            # (phi_vv(s_j) * W_vv(r_ij)) v_j == W_vv(r_ij) (phi_vv(s_j) v_j): the product
            # with v_j is formed once per atom instead of once per edge
            dv = dv + message(phi[:, 2 * f :].unsqueeze(1) * v, 2)
        if norm != 1.0:
            ds, dv = ds / norm, dv / norm
        return s + ds, v + dv


class _Update(nn.Module):
    """``(a_vv, a_sv, a_ss) = MLP(s, |V v|)``; ``dv = a_vv * U v``,
    ``ds = a_sv * <U v, V v> + a_ss``."""

    def __init__(self, features: int, norm_eps: float):
        super().__init__()
        self.features = features
        self.norm_eps = norm_eps
        self.uv = nn.Linear(features, 2 * features, bias=False)  # U and V in one matmul
        self.mlp = nn.Sequential(nn.Linear(2 * features, features), nn.SiLU(), nn.Linear(features, 3 * features))

    def forward(self, s, v):
        u, w = self.uv(v).split(self.features, dim=-1)  # (N, 3, F) each
        w_norm = torch.sqrt((w * w).sum(dim=1) + self.norm_eps)  # smooth at w = 0
        a_vv, a_sv, a_ss = self.mlp(torch.cat([s, w_norm], dim=-1)).split(self.features, dim=-1)
        return s + a_sv * (u * w).sum(dim=1) + a_ss, v + a_vv.unsqueeze(1) * u


class PaiNNEncoder(Encoder):
    """PaiNN: equivariant message passing with scalar and vector features.

    ``s_i`` starts as a learned element embedding plus (``element_table``) a linear map
    of the fixed element feature table of CGCNN (group, period, electronegativity, ...;
    equivalent to concatenating both through one linear layer), ``v_i`` at zero. Each
    of ``num_layers`` blocks is a message (radial filters from ``num_radial`` sine
    functions times a polynomial envelope that vanishes with two derivatives at
    ``cutoff`` Å) then an update; every neighbour within the cutoff is used (smooth,
    no cap). Sums over neighbours are divided by ``avg_neighbors``. Output: the final
    scalar features, ``(N, atom_features)``. See the module docstring for ``norm_eps``.
    In eval mode (forces and stress of given structures) the two gated message sums
    run in chunks of edges and keep no per-edge tensor for the backward pass
    (:class:`_GatedMessage`; the ``r_hat`` term keeps its two): 10,010 atoms of SrTiO3
    need 3.1 GB instead of 6.9 GB.
    """

    smooth = True

    def __init__(
        self,
        atom_features: int = 64,
        num_layers: int = 3,
        cutoff: float = 5.0,
        num_radial: int = 20,
        avg_neighbors: float = 20.0,
        norm_eps: float = 1.0,
        element_table: bool = True,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if norm_eps <= 0:
            raise ValueError(f"norm_eps must be positive (smooth vector norm), got {norm_eps}")
        self.save_config(
            atom_features=atom_features, num_layers=num_layers, cutoff=cutoff, num_radial=num_radial,
            avg_neighbors=avg_neighbors, norm_eps=norm_eps, element_table=element_table,
        )
        self.cutoff = float(cutoff)
        self.max_neighbors = None
        self.out_features = atom_features
        self.avg_neighbors = float(avg_neighbors)
        self.embedding = nn.Embedding(119, atom_features)
        if element_table:
            table = torch.tensor(atom_feature_table(), dtype=torch.get_default_dtype())
            self.register_buffer("element_features", table)
            self.table_linear = nn.Linear(table.shape[1], atom_features, bias=False)
        else:
            self.element_features = None
            self.table_linear = None
        self.rbf = SineBasis(self.cutoff, num_radial)
        self.messages = nn.ModuleList(
            _Message(atom_features, num_radial, first=(k == 0)) for k in range(num_layers)
        )
        self.updates = nn.ModuleList(_Update(atom_features, norm_eps) for _ in range(num_layers))

    def embed(self, graph: CrystalGraph) -> torch.Tensor:
        """Initial scalar features ``(N, F)`` (soft when ``graph.species_weights`` is set)."""
        s = graph.element_lookup(self.embedding.weight)
        if self.table_linear is not None:
            s = s + self.table_linear(graph.element_lookup(self.element_features))
        return s

    def features(self, graph: CrystalGraph, edge_vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final scalar ``(N, F)`` and vector ``(N, 3, F)`` features (Cartesian axis
        second: under a rotation ``R`` of the edge vectors ``v -> R v``)."""
        d2 = (edge_vectors * edge_vectors).sum(dim=-1)
        d = torch.sqrt(d2.clamp_min(_MIN_D2))
        edges = _Edges(graph.edge_index, edge_vectors / d.unsqueeze(-1), graph.num_nodes)
        rbf = self.rbf(d)
        s = self.embed(graph)
        v = s.new_zeros((s.shape[0], 3, s.shape[1]))
        for message, update in zip(self.messages, self.updates, strict=True):
            s, v = update(*message(s, v, rbf, edges, self.avg_neighbors))
        return s, v

    def forward(self, graph: CrystalGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        return self.features(graph, edge_vectors)[0]

"""CGCNN (Xie & Grossman, PRL 120, 145301, 2018) and a smooth variant for potentials."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crystalgnn_plugins.encoders.atom_features import atom_feature_table
from crystalgnn_plugins.encoders.base import Encoder
from crystalgnn_plugins.encoders.basis import GaussianExpansion, PolynomialEnvelope
from crystalgnn_plugins.graph import CrystalGraph


class GatedConvolution(nn.Module):
    """``v_i <- g(v_i + sum_{j,k} sigmoid(z W_f + b_f) * g(z W_s + b_s) [* w_ij])``,
    ``z = v_i (+) v_j (+) u_ij``, ``g`` = softplus.

    With ``batch_norm`` (as in CGCNN) the gate pre-activations and the
    aggregated message are batch-normalised; the smooth variant leaves them out
    and divides the sum by ``norm`` (a typical neighbour count) instead.
    """

    def __init__(self, node_dim: int, edge_dim: int, batch_norm: bool = True, norm: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(2 * node_dim + edge_dim, 2 * node_dim)
        self.bn_edges = nn.BatchNorm1d(2 * node_dim) if batch_norm else nn.Identity()
        self.bn_nodes = nn.BatchNorm1d(node_dim) if batch_norm else nn.Identity()
        self.norm = norm

    def forward(
        self,
        h: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        edge_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        i, j = edge_index
        z = self.linear(torch.cat([h[i], h[j], edge_attr], dim=-1))
        if z.shape[0] > 1 or not self.training:
            z = self.bn_edges(z)
        gate, core = z.chunk(2, dim=-1)
        m = torch.sigmoid(gate) * F.softplus(core)
        if edge_weight is not None:
            m = m * edge_weight.unsqueeze(-1)
        agg = torch.zeros_like(h).index_add(0, i, m)
        if self.norm != 1.0:
            agg = agg / self.norm
        if agg.shape[0] > 1 or not self.training:
            agg = self.bn_nodes(agg)
        return F.softplus(h + agg)


class _AtomEmbedding(nn.Module):
    """Fixed CGCNN-style element features followed by a learned linear map."""

    def __init__(self, out_features: int):
        super().__init__()
        table = torch.tensor(atom_feature_table(), dtype=torch.get_default_dtype())
        self.register_buffer("atom_features", table)
        self.linear = nn.Linear(table.shape[1], out_features)

    def forward(self, graph: CrystalGraph) -> torch.Tensor:
        return self.linear(graph.element_lookup(self.atom_features))


class _GatedEncoder(Encoder):
    """Element embedding + Gaussian-expanded distances + gated convolutions;
    with ``envelope`` the messages are weighted by a smooth cutoff."""

    def _build(self, atom_features: int, num_conv: int, gaussian_step: float, smooth: bool, norm: float = 1.0):
        self.out_features = atom_features
        self.embedding = _AtomEmbedding(atom_features)
        self.expansion = GaussianExpansion(0.0, self.cutoff, gaussian_step)
        self.envelope = PolynomialEnvelope(self.cutoff) if smooth else None
        self.convs = nn.ModuleList(
            GatedConvolution(atom_features, self.expansion.num_features, batch_norm=not smooth, norm=norm)
            for _ in range(num_conv)
        )

    def forward(self, graph: CrystalGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        d = torch.linalg.norm(edge_vectors, dim=-1)
        u = self.expansion(d)
        w = self.envelope(d) if self.envelope is not None else None
        h = self.embedding(graph)
        for conv in self.convs:
            h = conv(h, graph.edge_index, u, w)
        return h


class CGCNNEncoder(_GatedEncoder):
    """Faithful CGCNN encoder: Gaussian-expanded distances (0 to ``cutoff`` Å,
    step ``gaussian_step``), the ``max_neighbors`` nearest neighbours within
    ``cutoff``, ``num_conv`` gated convolutions with batch norm.

    Defaults are the paper's: 64 atom features, 3 convolutions, 8 Å, 12 neighbours.
    Hard neighbour truncation makes it unsuitable as a potential (use
    :class:`SmoothCGCNNEncoder`).
    """

    smooth = False

    def __init__(
        self,
        atom_features: int = 64,
        num_conv: int = 3,
        cutoff: float = 8.0,
        max_neighbors: int | None = 12,
        gaussian_step: float = 0.2,
    ):
        super().__init__()
        self.save_config(
            atom_features=atom_features, num_conv=num_conv, cutoff=cutoff,
            max_neighbors=max_neighbors, gaussian_step=gaussian_step,
        )
        self.cutoff = float(cutoff)
        self.max_neighbors = max_neighbors
        self._build(atom_features, num_conv, gaussian_step, smooth=False)


class SmoothCGCNNEncoder(_GatedEncoder):
    """CGCNN made smooth for potentials: every neighbour within ``cutoff`` (no
    truncation), messages multiplied by a polynomial envelope that vanishes with
    its first two derivatives at the cutoff, no batch norm (the message sum is
    divided by ``avg_neighbors``). Energies are continuous (and twice
    differentiable) as atoms cross the cutoff.
    """

    smooth = True

    def __init__(
        self,
        atom_features: int = 64,
        num_conv: int = 3,
        cutoff: float = 5.0,
        gaussian_step: float = 0.25,
        avg_neighbors: float = 20.0,
    ):
        super().__init__()
        self.save_config(
            atom_features=atom_features, num_conv=num_conv, cutoff=cutoff,
            gaussian_step=gaussian_step, avg_neighbors=avg_neighbors,
        )
        self.cutoff = float(cutoff)
        self.max_neighbors = None
        self._build(atom_features, num_conv, gaussian_step, smooth=True, norm=avg_neighbors)

"""Built-in encoders, registered through the same hook as third-party plugins."""

from __future__ import annotations

from crystalgnn_plugins.hookspecs import hookimpl


@hookimpl
def register_encoders(register):
    from crystalgnn_plugins.encoders.cgcnn import CGCNNEncoder, SmoothCGCNNEncoder

    register("cgcnn", CGCNNEncoder, description="CGCNN (Xie & Grossman 2018): gated convolutions, 12 neighbours within 8 Å")
    register("smooth_cgcnn", SmoothCGCNNEncoder, description="CGCNN with a smooth cutoff envelope and no neighbour cap, for potentials")
    from crystalgnn_plugins.encoders.painn import PaiNNEncoder

    register("painn", PaiNNEncoder, description="PaiNN (Schütt et al. 2021): equivariant scalar+vector messages, smooth 5 Å cutoff, for potentials")

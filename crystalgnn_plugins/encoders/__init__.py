"""Encoders: crystal graph -> per-atom features. Each is a plugin (``register_encoders``)."""

from crystalgnn_plugins.encoders.base import Encoder, build_encoder, encoder_name
from crystalgnn_plugins.encoders.cgcnn import CGCNNEncoder, SmoothCGCNNEncoder
from crystalgnn_plugins.encoders.painn import PaiNNEncoder

__all__ = ["CGCNNEncoder", "Encoder", "PaiNNEncoder", "SmoothCGCNNEncoder", "build_encoder", "encoder_name"]

"""Encoders: crystal graph -> per-atom features. Each is a plugin (``register_encoders``)."""

from crystalgnn_plugins.encoders.base import Encoder, build_encoder, encoder_name
from crystalgnn_plugins.encoders.cgcnn import CGCNNEncoder, SmoothCGCNNEncoder

__all__ = ["CGCNNEncoder", "Encoder", "SmoothCGCNNEncoder", "build_encoder", "encoder_name"]

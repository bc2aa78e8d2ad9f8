"""Every built-in encoder passes the shipped conformance kit (float64)."""

from crystalgnn_plugins.testing import EncoderConformance


class TestSmoothCGCNN(EncoderConformance):
    encoder = "smooth_cgcnn"
    encoder_kwargs = {"atom_features": 16, "num_conv": 2, "cutoff": 4.5}
    species = ("Cu", "Ag", "Au")


class TestSmoothCGCNNIonic(EncoderConformance):
    encoder = "smooth_cgcnn"
    encoder_kwargs = {"atom_features": 8, "num_conv": 1, "cutoff": 5.0}
    species = ("Na", "Cl", "O", "Si")


class TestCGCNN(EncoderConformance):
    encoder = "cgcnn"
    encoder_kwargs = {"atom_features": 16, "num_conv": 2}
    species = ("Sr", "Ti", "O")

"""Training with Lightning: datasets, losses, the Lightning module and ``train``."""

from crystalgnn_plugins.training.evaluate import evaluate, predict
from crystalgnn_plugins.training.trainer import TrainResult, train

__all__ = ["TrainResult", "evaluate", "predict", "train"]

"""Metrics: regression (MAE, RMSE, R²); generation metrics come with the generator."""

from crystalgnn_plugins.metrics.regression import regression_metrics

__all__ = ["regression_metrics"]

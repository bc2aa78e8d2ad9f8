"""Metrics: regression (MAE, RMSE, R²) and, in ``crystalgnn_plugins.metrics.generation``
(not imported here; needs the ``generation`` extra), the CDVAE generation metrics:
validity, COV-R/COV-P, density and #elements EMD, uniqueness, novelty, CSP match."""

from crystalgnn_plugins.metrics.regression import regression_metrics

__all__ = ["regression_metrics"]

"""Regression metrics (scikit-learn): MAE, RMSE, R²."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def regression_metrics(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``{"mae", "rmse", "r2", "n"}`` of flattened arrays (units of the inputs)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    if t.size == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "r2": float("nan"), "n": 0}
    return {
        "mae": float(mean_absolute_error(t, p)),
        "rmse": float(np.sqrt(mean_squared_error(t, p))),
        "r2": float(r2_score(t, p)) if t.size > 1 else float("nan"),
        "n": int(t.size),
    }

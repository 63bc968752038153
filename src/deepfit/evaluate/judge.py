"""A run against its strongest baseline: a 95 % interval on its key test metric and a paired
test on the same test items, read as "better", "no significant difference" or "worse".

Classifiers: Wilson interval, McNemar's exact test on the items either one gets right.
Forecasts and regression: seeded bootstrap interval of RMSE / MSE, paired bootstrap of the
squared errors. Generation: bootstrap interval of the Fréchet distance; with no paired items,
"better" only when the two intervals do not overlap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepfit.evaluate import stats

ALPHA = 0.05


def classification(
    y_true: np.ndarray, y_pred: np.ndarray, base_pred: np.ndarray, seed: int
) -> dict[str, Any]:
    """Interval of the model's accuracy; McNemar's exact test against the baseline's labels."""
    right, base_right = y_pred == y_true, base_pred == y_true
    low, high = stats.wilson_interval(int(right.sum()), len(right))
    p_value = stats.mcnemar_exact(right, base_right)
    better = bool(right.mean() > base_right.mean())
    return _judged(low, high, p_value, better, "McNemar exact")


def errors(
    y_true: np.ndarray, y_pred: np.ndarray, base_pred: np.ndarray, metric: str, seed: int
) -> dict[str, Any]:
    """Bootstrap interval of RMSE or MSE; paired bootstrap test of the squared errors."""
    statistic = {"rmse": stats.rmse, "mse": stats.mse}[metric]
    low, high = stats.bootstrap_interval(statistic, y_true, y_pred, seed=seed)
    p_value = stats.paired_bootstrap(y_pred - y_true, base_pred - y_true, seed=seed)
    better = bool(statistic(y_true, y_pred) < statistic(y_true, base_pred))
    return _judged(low, high, p_value, better, "paired bootstrap")


def bits(model_bits: np.ndarray, base_bits: np.ndarray, seed: int) -> dict[str, Any]:
    """Bits per character of each test window (n, T) for the model and the baseline: bootstrap
    interval of the model's mean, paired bootstrap over windows (neighbouring characters are not
    independent; whole windows are the resampled items)."""
    model_windows = np.asarray(model_bits, dtype=np.float64).mean(axis=1)
    base_windows = np.asarray(base_bits, dtype=np.float64).mean(axis=1)
    low, high = stats.bootstrap_interval(np.mean, model_windows, seed=seed)
    p_value = stats.paired_bootstrap(model_windows, base_windows, seed=seed, loss="absolute")
    better = bool(model_windows.mean() < base_windows.mean())
    return _judged(low, high, p_value, better, "paired bootstrap over windows")


def generation(
    model_interval: tuple[float, float], base_interval: tuple[float, float], better: bool
) -> dict[str, Any]:
    """No shared test items: better or worse only when the two FID intervals do not overlap."""
    (low, high), (base_low, base_high) = model_interval, base_interval
    if high < base_low:
        verdict = "better"
    elif low > base_high:
        verdict = "worse"
    else:
        verdict = "no significant difference"
    return {
        "ci_low": low,
        "ci_high": high,
        "baseline_ci_low": base_low,
        "baseline_ci_high": base_high,
        "test": "bootstrap intervals (do they overlap?)",
        "verdict": verdict,
        "lower_is_better_and_lower": better,
    }


def _judged(low: float, high: float, p_value: float, better: bool, test: str) -> dict[str, Any]:
    return {
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value,
        "test": test,
        "verdict": stats.compare_verdict(p_value, better, ALPHA),
    }

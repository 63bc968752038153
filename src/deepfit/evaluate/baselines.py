"""The classical baselines each run is compared with, fitted on the same training split.

Pure functions on numpy arrays; scikit-learn and statsmodels are imported inside the functions
that need them, so importing this module stays fast. No TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from deepfit.evaluate.metrics import regression_metrics

# RBF-SVM training is quadratic in the number of samples; beyond this we fit on a stratified subset
# so a 60k-image dataset still gets a baseline in minutes, not hours.
BASELINE_MAX_TRAIN = 10_000


def classification_baselines(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    seed: int,
    max_train: int | None = BASELINE_MAX_TRAIN,
) -> dict[str, dict[str, float | int]]:
    """Logistic regression and an RBF SVM on flattened, standardised inputs.

    Returns ``{"logreg": {"accuracy", "f1_macro", "n_train"}, "svm": {...}}``. Deterministic for a
    given ``seed`` (which only matters when the training set is larger than ``max_train``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    xtr, ytr = _subsample(_flat(x_train), np.asarray(y_train).reshape(-1), max_train, seed)
    xte, yte = _flat(x_test), np.asarray(y_test).reshape(-1)
    models = {
        "logreg": LogisticRegression(max_iter=2000, random_state=seed),
        "svm": SVC(kernel="rbf", random_state=seed),
    }
    results = {}
    for name, estimator in models.items():
        # The scaler sits in the pipeline so it is fitted on the training split only.
        pipe = make_pipeline(StandardScaler(), estimator).fit(xtr, ytr)
        pred = pipe.predict(xte)
        results[name] = {
            "accuracy": float(np.mean(pred == yte)),
            "f1_macro": float(f1_score(yte, pred, average="macro", zero_division=0)),
            "n_train": len(ytr),
        }
    return results


def constant_baseline(y_train: ArrayLike, y_test: ArrayLike) -> dict[str, float]:
    """MSE of predicting a constant: the train mean (``mse``) and the textbook 1.0 (``mse_one``).

    Returns ``{"train_mean", "mse", "mse_one"}``; for the adding problem both MSEs are ≈ 0.167.
    """
    train = np.asarray(y_train, dtype=np.float64).reshape(-1)
    test = np.asarray(y_test, dtype=np.float64).reshape(-1)
    mean = float(train.mean())
    return {
        "train_mean": mean,
        "mse": float(np.mean((test - mean) ** 2)),
        "mse_one": float(np.mean((test - 1.0) ** 2)),
    }


def series_from_windows(x: ArrayLike, y: ArrayLike, atol: float = 1e-6) -> np.ndarray:
    """The contiguous series behind stride-1 windows ``x`` (n, window[, 1]) and next values ``y``.

    Raises ``ValueError`` if the windows are not consecutive (shuffled, strided or gappy).
    """
    windows = _windows(x)
    targets = np.asarray(y, dtype=np.float64).reshape(-1)
    if windows.shape[0] != targets.size:
        raise ValueError(f"{windows.shape[0]} windows but {targets.size} targets")
    series = np.concatenate([windows[0], targets])
    width = windows.shape[1]
    expected = np.lib.stride_tricks.sliding_window_view(series, width)[: windows.shape[0]]
    if not np.allclose(windows, expected, atol=atol, rtol=0.0):
        bad = int(np.argmax(~np.isclose(windows, expected, atol=atol, rtol=0.0).all(axis=1)))
        raise ValueError(
            f"train windows are not one contiguous series: window {bad} does not continue "
            "the previous ones (windows must be in time order with stride 1)"
        )
    return series


def fit_ar(series: ArrayLike, max_lag: int) -> tuple[float, np.ndarray]:
    """Fit an AR(p) with constant, p chosen by AIC up to ``max_lag``; return (const, phi[1..p])."""
    from statsmodels.tsa.ar_model import AutoReg, ar_select_order

    endog = np.asarray(series, dtype=np.float64).reshape(-1)
    # Leave enough observations for the regression with the largest candidate order.
    max_lag = int(min(max_lag, (endog.size - 2) // 2))
    if max_lag < 1:
        raise ValueError(f"series of length {endog.size} is too short to fit an AR model")
    selected = ar_select_order(endog, maxlag=max_lag, ic="aic", trend="c")
    order = max(selected.ar_lags) if selected.ar_lags else 0
    params = np.asarray(AutoReg(endog, lags=order, trend="c").fit().params, dtype=np.float64)
    return float(params[0]), params[1:]


def ar_predict(const: float, phi: np.ndarray, x: ArrayLike) -> np.ndarray:
    """One-step-ahead AR predictions from each window's own last ``len(phi)`` values."""
    windows = _windows(x)
    order = len(phi)
    if order > windows.shape[1]:
        raise ValueError(f"AR order {order} exceeds the window length {windows.shape[1]}")
    if order == 0:
        return np.full(windows.shape[0], const)
    # phi[0] multiplies the most recent value, so reverse the tail of each window.
    lagged = windows[:, ::-1][:, :order]
    return const + lagged @ phi


def forecast_baselines(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    mean: float,
    std: float,
    max_lag: int,
) -> dict[str, dict[str, Any]]:
    """Persistence and AR one-step-ahead forecasts of standardised windows, in original units.

    ``x`` are windows of past standardised values (n, window[, 1]), ``y`` the next value (n[, 1]);
    ``value = standardised * std + mean``. The AR model is fitted on the train series only and
    predicts each test target from the true values in its window. Returns
    ``{"persistence": {"mse", "rmse", "mae"},
    "ar": {"mse", "rmse", "mae", "order", "predictions": [float]}}``.
    """
    test_windows = _windows(x_test) * std + mean
    actual = np.asarray(y_test, dtype=np.float64).reshape(-1) * std + mean
    train_series = series_from_windows(x_train, y_train) * std + mean

    persistence = regression_metrics(actual, test_windows[:, -1])
    const, phi = fit_ar(train_series, min(max_lag, test_windows.shape[1]))
    predicted = ar_predict(const, phi, test_windows)
    ar = {**regression_metrics(actual, predicted), "order": len(phi)}
    return {"persistence": persistence, "ar": {**ar, "predictions": predicted.tolist()}}


# --- helpers --------------------------------------------------------------------------------


def _flat(x: ArrayLike) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    return arr.reshape(arr.shape[0], -1)


def _subsample(
    x: np.ndarray, y: np.ndarray, max_n: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if max_n is None or len(y) <= max_n:
        return x, y
    from sklearn.model_selection import train_test_split

    x_kept, _, y_kept, _ = train_test_split(x, y, train_size=max_n, stratify=y, random_state=seed)
    return x_kept, y_kept


def _windows(x: ArrayLike) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"windows must have shape (n, window) or (n, window, 1), got {arr.shape}")
    return arr

"""Test metrics and the baselines each run is compared with, as pure functions on numpy arrays."""

# Results are plain Python numbers, lists and dicts so they go straight into
# reports/metrics/<run>.json and MLflow. scikit-learn, statsmodels and scipy are imported inside
# the functions that need them, so importing this module stays fast.

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# Keras' own clipping epsilon, so our test loss matches the loss Keras reports for the same model.
PROBA_EPS = 1e-7
# Same order of magnitude as the reference FID code: big enough to make a rank-deficient
# covariance invertible, small enough not to move a well-conditioned distance.
FRECHET_EPS = 1e-6
# Imaginary parts of sqrtm below this are round-off, not a sign that the product has no real root.
FRECHET_IMAG_TOL = 1e-3
# RBF-SVM training is quadratic in the number of samples; beyond this we fit on a stratified subset
# so a 60k-image dataset still gets a baseline in minutes, not hours.
BASELINE_MAX_TRAIN = 10_000


# --- classification -------------------------------------------------------------------------


def confusion(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> list[list[int]]:
    """Confusion matrix as lists: row = true class, column = predicted class."""
    true = _labels(y_true, n_classes, "y_true")
    pred = _labels(y_pred, n_classes, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}")
    counts = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).tolist()


def cross_entropy(y_true: ArrayLike, proba: ArrayLike, eps: float = PROBA_EPS) -> float:
    """Mean categorical cross-entropy of integer labels under predicted class probabilities."""
    p = np.asarray(proba, dtype=np.float64)
    true = _labels(y_true, p.shape[1], "y_true")
    # As Keras does: renormalise rows, then clip, so a hard 0 for the true class costs -log(eps).
    p = p / p.sum(axis=1, keepdims=True)
    picked = np.clip(p[np.arange(true.size), true], eps, 1.0 - eps)
    return float(-np.mean(np.log(picked)))


def classification_metrics(y_true: ArrayLike, proba: ArrayLike) -> dict[str, Any]:
    """Accuracy, loss, macro F1 and confusion matrix of class probabilities ``proba`` (n, K).

    Returns ``{"accuracy", "loss", "f1_macro", "confusion": [[int]*K]*K}``.
    """
    from sklearn.metrics import f1_score

    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"proba must have shape (n, n_classes), got {p.shape}")
    n_classes = p.shape[1]
    true = _labels(y_true, n_classes, "y_true")
    if true.size != p.shape[0]:
        raise ValueError(f"y_true has {true.size} labels but proba has {p.shape[0]} rows")
    pred = p.argmax(axis=1)
    return {
        "accuracy": float(np.mean(pred == true)),
        "loss": cross_entropy(true, p),
        "f1_macro": float(f1_score(true, pred, average="macro", zero_division=0)),
        "confusion": confusion(true, pred, n_classes),
    }


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


# --- regression and forecasting -------------------------------------------------------------


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """``{"mse", "rmse", "mae"}`` of predictions, in whatever units the inputs are in."""
    true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} values but y_pred has {pred.size}")
    err = pred - true
    mse = float(np.mean(err**2))
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(err)))}


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


# --- generative models ----------------------------------------------------------------------


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike, eps: float = FRECHET_EPS) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n_a, d) and (n_b, d).

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))``; with Inception features this
    is the FID. Covariances are sample covariances (ddof=1).
    """
    mu_a, cov_a = _gaussian(feats_a)
    mu_b, cov_b = _gaussian(feats_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sets differ in dimension: {mu_a.size} vs {mu_b.size}")
    diff = mu_a - mu_b
    trace_root = _trace_sqrt_product(cov_a, cov_b, eps)
    distance = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root
    # Round-off can push a distance between identical sets a hair below zero.
    return float(max(distance, 0.0))


def real_vs_real_floor(real_feats: ArrayLike, seed: int) -> float:
    """Fréchet distance between two random disjoint halves of one real feature set.

    The floor a generator cannot be expected to beat at this sample size. To compare two given
    real sets (e.g. train vs test features) call ``frechet_distance`` on them directly.
    """
    feats = np.asarray(real_feats, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(feats.shape[0])
    half = feats.shape[0] // 2
    return frechet_distance(feats[order[:half]], feats[order[half : 2 * half]])


def class_coverage(
    pred_labels: ArrayLike, n_classes: int, min_share: float = 0.01
) -> dict[str, Any]:
    """How many classes get at least ``min_share`` of the samples (a mode-collapse check).

    Returns ``{"classes_covered": int, "max_class_share": float, "shares": [float] * n_classes}``.
    """
    labels = _labels(pred_labels, n_classes, "pred_labels")
    if labels.size == 0:
        raise ValueError("pred_labels is empty")
    shares = np.bincount(labels, minlength=n_classes) / labels.size
    return {
        "classes_covered": int(np.sum(shares >= min_share)),
        "max_class_share": float(shares.max()),
        "shares": shares.tolist(),
    }


# --- helpers --------------------------------------------------------------------------------


def _labels(values: ArrayLike, n_classes: int, name: str) -> np.ndarray:
    labels = np.asarray(values).reshape(-1)
    if labels.size and not np.all(labels == np.round(labels)):
        raise ValueError(f"{name} must hold integer class labels")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{name} must lie in [0, {n_classes - 1}]")
    return labels


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


def _gaussian(feats: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(feats, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"features must have shape (n >= 2, d), got {arr.shape}")
    return arr.mean(axis=0), np.atleast_2d(np.cov(arr, rowvar=False))


def _trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray, eps: float) -> float:
    """tr((cov_a @ cov_b)^(1/2)), regularising the diagonals when the root is ill-conditioned."""
    root, singular = _sqrtm(cov_a @ cov_b)
    if singular or not _usable_root(root):
        # Near-singular covariances (fewer samples than dimensions, dead features) make the
        # product's root unstable; a tiny ridge on both restores it, as the reference FID code does.
        ridge = eps * np.eye(cov_a.shape[0])
        root, _ = _sqrtm((cov_a + ridge) @ (cov_b + ridge))
        if not _usable_root(root):
            raise ValueError("matrix square root of the covariance product is not real")
    return float(np.trace(np.real(root)))


def _sqrtm(matrix: np.ndarray) -> tuple[np.ndarray, bool]:
    """scipy's sqrtm, plus whether it warned that the matrix is singular."""
    from scipy.linalg import LinAlgWarning, sqrtm

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LinAlgWarning)
        root = sqrtm(matrix)
    singular = False
    for w in caught:
        if issubclass(w.category, LinAlgWarning):
            singular = True
        else:
            warnings.warn(w.message, w.category, stacklevel=2)
    return root, singular


def _usable_root(root: np.ndarray) -> bool:
    if not np.all(np.isfinite(root)):
        return False
    return not np.iscomplexobj(root) or np.abs(np.imag(np.diag(root))).max() < FRECHET_IMAG_TOL

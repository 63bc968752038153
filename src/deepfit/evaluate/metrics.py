"""Test metrics as pure functions on numpy arrays, and the key metric each kind of run is judged by.

Results are plain Python numbers, lists and dicts so they go straight into the metrics files and
MLflow. scikit-learn and scipy are imported inside the functions that need them.
"""

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


# The number a run is judged by, per kind of evaluation: (test metric, baseline it is compared
# with, better direction). MLflow has them as test.<metric> and baseline.strongest.<metric>.
KEY_METRICS = {
    "classification": ("accuracy", "strongest", "higher"),
    "forecast": ("rmse", "strongest", "lower"),
    "regression": ("mse", "strongest", "lower"),
    "generative": ("fid", "strongest", "lower"),
    "language_model": ("bpc", "strongest", "lower"),
    "translation": ("exact_match", "strongest", "higher"),
}


def key_metric_names(kind: str) -> tuple[str, str, str]:
    """MLflow names of a kind's key metric and its baseline's, and the better direction."""
    metric, baseline, direction = KEY_METRICS[kind]
    return f"test.{metric}", f"baseline.{baseline}.{metric}", direction


def evaluation_kind(model: str, dataset: Any) -> str:
    """generative, language_model (a text corpus), translation, classification, forecast (a
    windowed series) or regression; from params."""
    from deepfit.data.config import dataset_kind_and_task
    from deepfit.models import get_spec

    if get_spec(model).generative:
        return "generative"
    if dataset.source == "text":
        return "language_model"
    if dataset.source == "translation":
        return "translation"
    _, task = dataset_kind_and_task(dataset)
    if task == "classification":
        return "classification"
    return "forecast" if dataset.source == "sunspots" else "regression"


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


# --- language models ------------------------------------------------------------------------


def target_bits(y_true: ArrayLike, proba: ArrayLike, eps: float = PROBA_EPS) -> np.ndarray:
    """Bits of every target id under next-token probabilities: (n, T) ids, (n, T, V) proba."""
    true = np.asarray(y_true).astype(np.int64)
    p = np.asarray(proba)
    if p.shape[:-1] != true.shape:
        raise ValueError(f"proba has shape {p.shape}, expected {(*true.shape, 'V')}")
    picked = np.take_along_axis(p, true[..., None], axis=-1)[..., 0].astype(np.float64)
    return -np.log2(np.clip(picked, eps, 1.0))


def language_model_metrics(bits: ArrayLike, correct: ArrayLike) -> dict[str, float]:
    """Bits per character, perplexity (per character), loss in nats and next-character
    accuracy, from each target's bits and whether the most likely id was the target."""
    bpc = float(np.mean(bits))
    return {
        "bpc": bpc,
        "perplexity": float(2.0**bpc),
        "loss": bpc * float(np.log(2.0)),
        "accuracy": float(np.mean(correct)),
    }


# --- translation ----------------------------------------------------------------------------


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, start=1):
        current = [i]
        for j, other in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != other))
            )
        previous = current
    return previous[-1]


def translation_metrics(targets: list[str], predicted: list[str]) -> dict[str, float]:
    """Exact-match accuracy, and the character error rate: edit distance summed over items
    divided by the targets' characters."""
    if len(targets) != len(predicted):
        raise ValueError(f"{len(targets)} targets but {len(predicted)} predictions")
    errors = sum(edit_distance(p, t) for t, p in zip(targets, predicted, strict=True))
    return {
        "exact_match": float(np.mean([t == p for t, p in zip(targets, predicted, strict=True)])),
        "cer": errors / max(1, sum(len(t) for t in targets)),
    }


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

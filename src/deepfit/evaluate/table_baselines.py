"""Baselines of a run on a table (`source: csv`): a linear model and gradient-boosted trees, each
with its hyper-parameter chosen on the validation split and scored on the test split.

They see the same encoded rows as the network (standardised numbers, one-hot categories).
scikit-learn is imported inside the function; no TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from deepfit.evaluate.metrics import regression_metrics

# Small grids: each candidate is fitted on train and the best on validation is scored on test.
LINEAR_C = (0.1, 1.0, 10.0)  # inverse L2 strength of the logistic regression
RIDGE_ALPHA = (0.1, 1.0, 10.0)
TREE_LEAVES = (15, 31, 63)  # max_leaf_nodes of the gradient-boosted trees


def table_baselines(
    train: tuple[ArrayLike, ArrayLike],
    val: tuple[ArrayLike, ArrayLike],
    test: tuple[ArrayLike, ArrayLike],
    task: str,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """``{"logreg" | "ridge": {...}, "gradient_boosting": {...}}`` with test metrics and the chosen
    hyper-parameter. Classification labels are class codes; regression targets are in the units
    the metrics should report."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    classify = task == "classification"
    if classify:
        linear = {"logreg": ("C", [LogisticRegression(C=c, max_iter=2000) for c in LINEAR_C])}
        trees = HistGradientBoostingClassifier
    else:
        linear = {"ridge": ("alpha", [Ridge(alpha=a) for a in RIDGE_ALPHA])}
        trees = HistGradientBoostingRegressor
    boosted = [trees(max_leaf_nodes=n, random_state=seed) for n in TREE_LEAVES]
    candidates = {**linear, "gradient_boosting": ("max_leaf_nodes", boosted)}
    data = [_arrays(split, classify) for split in (train, val, test)]
    return {name: _best(key, models, data, classify) for name, (key, models) in candidates.items()}


def _best(key: str, models: list[Any], data: list[tuple], classify: bool) -> dict[str, Any]:
    """Fit each candidate on train, keep the best on validation, report it on test."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data
    scored = []
    for model in models:
        model.fit(x_train, y_train)
        scored.append((_score(model.predict(x_val), y_val, classify), model))
    _, model = max(scored, key=lambda pair: pair[0])
    return {**_metrics(model.predict(x_test), y_test, classify), key: model.get_params()[key]}


def _score(predicted: np.ndarray, actual: np.ndarray, classify: bool) -> float:
    """Higher is better: accuracy, or minus the mean squared error."""
    if classify:
        return float(np.mean(predicted == actual))
    return -float(np.mean((predicted - actual) ** 2))


def _metrics(predicted: np.ndarray, actual: np.ndarray, classify: bool) -> dict[str, Any]:
    if not classify:
        return regression_metrics(actual, predicted)
    from sklearn.metrics import f1_score

    return {
        "accuracy": float(np.mean(predicted == actual)),
        "f1_macro": float(f1_score(actual, predicted, average="macro", zero_division=0)),
    }


def _arrays(split: tuple[ArrayLike, ArrayLike], classify: bool) -> tuple[np.ndarray, np.ndarray]:
    x, y = split
    y = np.asarray(y).reshape(-1)
    return np.asarray(x, dtype=np.float64), y.astype(np.int64 if classify else np.float64)

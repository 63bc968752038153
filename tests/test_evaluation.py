"""Metrics checked against hand computations and scikit-learn references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss

from deepfit.evaluate import metrics as ev

# --- classification -------------------------------------------------------------------------


def test_classification_metrics_tiny_case_by_hand():
    y = np.array([0, 1, 2, 1])
    proba = np.array(
        [
            [0.7, 0.2, 0.1],  # right
            [0.1, 0.8, 0.1],  # right
            [0.5, 0.4, 0.1],  # wrong: 2 predicted as 0
            [0.3, 0.6, 0.1],  # right
        ]
    )
    found = ev.classification_metrics(y, proba)
    assert found["accuracy"] == pytest.approx(0.75)
    expected_loss = -(math.log(0.7) + math.log(0.8) + math.log(0.1) + math.log(0.6)) / 4
    assert found["loss"] == pytest.approx(expected_loss)
    assert found["loss"] == pytest.approx(log_loss(y, proba))
    # Per class F1: class 0 P=1/2 R=1 -> 2/3; class 1 -> 1; class 2 -> 0.
    assert found["f1_macro"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert found["confusion"] == [[1, 0, 0], [0, 2, 0], [1, 0, 0]]
    json.dumps(found)


def test_cross_entropy_clips_zero_probability_of_true_class():
    loss = ev.cross_entropy([0], [[0.0, 1.0]])
    assert math.isfinite(loss)
    assert loss == pytest.approx(-math.log(ev.PROBA_EPS))


def test_classification_metrics_match_sklearn_on_random_case():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(5), size=200)
    y = rng.integers(0, 5, size=200)
    found = ev.classification_metrics(y.reshape(-1, 1), proba)
    pred = proba.argmax(axis=1)
    assert found["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert found["loss"] == pytest.approx(log_loss(y, proba), rel=1e-6)
    assert np.sum(found["confusion"]) == 200


def test_confusion_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        ev.confusion([0, 3], [0, 1], n_classes=3)


# --- regression and forecasting -------------------------------------------------------------


def test_regression_metrics_by_hand():
    found = ev.regression_metrics([1.0, 2.0, 3.0, 4.0], [[1.5], [2.0], [2.0], [6.0]])
    # errors 0.5, 0, -1, 2 -> squares 0.25, 0, 1, 4
    assert found["mse"] == pytest.approx(5.25 / 4)
    assert found["rmse"] == pytest.approx(math.sqrt(5.25 / 4))
    assert found["mae"] == pytest.approx(3.5 / 4)


def test_regression_metrics_reject_length_mismatch():
    with pytest.raises(ValueError):
        ev.regression_metrics([1.0, 2.0], [1.0])


def _windows(series: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.lib.stride_tricks.sliding_window_view(series[:-1], window)
    return x[..., None].copy(), series[window:, None].copy()


# --- generative -----------------------------------------------------------------------------


def test_frechet_distance_identical_sets_is_zero_and_symmetric():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    b = rng.normal(loc=0.5, scale=2.0, size=(400, 8))
    assert ev.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert ev.frechet_distance(a, b) == pytest.approx(ev.frechet_distance(b, a), rel=1e-6)
    assert ev.frechet_distance(a, b) > 1.0


def test_frechet_distance_one_dimensional_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.normal(2.0, 1.5, size=300), rng.normal(-1.0, 0.5, size=200)
    s1, s2 = a.std(ddof=1), b.std(ddof=1)
    expected = (a.mean() - b.mean()) ** 2 + (s1 - s2) ** 2
    assert ev.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert ev.frechet_distance(a[:, None], b[:, None]) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_diagonal_covariance_closed_form():
    rng = np.random.default_rng(2)
    # Exactly diagonal sample covariances: orthogonal centred columns, scaled per dimension.
    q, _ = np.linalg.qr(rng.normal(size=(50, 3)))
    base = q - q.mean(axis=0)
    base, _ = np.linalg.qr(base)
    base -= base.mean(axis=0)
    a = base * np.array([1.0, 2.0, 3.0]) + np.array([0.0, 1.0, 2.0])
    b = base * np.array([2.0, 0.5, 3.0]) + np.array([1.0, 1.0, -1.0])
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    assert np.allclose(ca - np.diag(np.diag(ca)), 0.0, atol=1e-10)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.sum(
        (np.sqrt(np.diag(ca)) - np.sqrt(np.diag(cb))) ** 2
    )
    assert ev.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_survives_singular_covariance():
    rng = np.random.default_rng(3)
    # Fewer samples than dimensions and a dead feature: both covariances are singular.
    a = rng.normal(size=(10, 32))
    b = rng.normal(size=(12, 32))
    a[:, 0] = b[:, 0] = 0.0
    value = ev.frechet_distance(a, b)
    assert math.isfinite(value) and value > 0.0


def test_real_vs_real_floor_is_small_against_a_shifted_set():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(1000, 4))
    floor = ev.real_vs_real_floor(real, seed=0)
    assert floor == ev.real_vs_real_floor(real, seed=0)
    assert 0.0 < floor < ev.frechet_distance(real, real + 1.0)


def test_class_coverage_counts():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 19 + [3])
    found = ev.class_coverage(labels, n_classes=5, min_share=0.05)
    assert found == {
        "classes_covered": 3,
        "max_class_share": 0.5,
        "shares": [0.5, 0.3, 0.19, 0.01, 0.0],
    }
    assert ev.class_coverage(labels, n_classes=5)["classes_covered"] == 4
    with pytest.raises(ValueError):
        ev.class_coverage([0, 7], n_classes=5)


@pytest.mark.parametrize("module", ["deepfit.evaluate.metrics", "deepfit.evaluate.baselines"])
def test_module_import_stays_light(module):
    import subprocess
    import sys

    code = (
        f"import sys, {module}; "
        "heavy = {'sklearn', 'scipy', 'statsmodels', 'tensorflow', 'keras', 'mlflow'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

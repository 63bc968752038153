"""Metrics and baselines checked against hand computations and scikit-learn references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score, log_loss
from sklearn.model_selection import train_test_split

from deepfit.evaluate import baselines as bl
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


@pytest.fixture(scope="module")
def digits_split():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 8, 8, 1)
    return train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)


def test_classification_baselines_on_digits(digits_split):
    x_train, x_test, y_train, y_test = digits_split
    found = bl.classification_baselines(x_train, y_train, x_test, y_test, seed=1)
    assert set(found) == {"logreg", "svm"}
    assert found["svm"]["accuracy"] > 0.95
    assert found["logreg"]["accuracy"] > 0.92
    assert 0.9 < found["svm"]["f1_macro"] <= 1.0
    assert found["svm"]["n_train"] == len(y_train)
    again = bl.classification_baselines(x_train, y_train, x_test, y_test, seed=1)
    assert again == found
    json.dumps(found)


def test_classification_baselines_subsample_stratified_and_seeded(digits_split):
    x_train, x_test, y_train, y_test = digits_split
    a = bl.classification_baselines(x_train, y_train, x_test, y_test, seed=3, max_train=300)
    b = bl.classification_baselines(x_train, y_train, x_test, y_test, seed=3, max_train=300)
    assert a == b
    assert a["svm"]["n_train"] == 300
    assert a["svm"]["accuracy"] > 0.85


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


def test_constant_baseline_adding_problem_is_about_one_sixth():
    rng = np.random.default_rng(0)
    # Sum of two U(0,1) values: mean 1, variance 1/6.
    y_train = rng.uniform(size=(20000, 2)).sum(axis=1)
    y_test = rng.uniform(size=(20000, 2)).sum(axis=1)
    found = bl.constant_baseline(y_train, y_test)
    assert found["mse_one"] == pytest.approx(1 / 6, abs=0.005)
    assert found["mse"] == pytest.approx(1 / 6, abs=0.005)
    assert found["train_mean"] == pytest.approx(1.0, abs=0.01)
    assert bl.constant_baseline([1.0, 3.0], [0.0, 4.0]) == {
        "train_mean": 2.0,
        "mse": 4.0,
        "mse_one": 5.0,
    }


def _windows(series: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.lib.stride_tricks.sliding_window_view(series[:-1], window)
    return x[..., None].copy(), series[window:, None].copy()


def _standardised_split(series: np.ndarray, window: int, n_test: int):
    mean, std = float(series.mean()), float(series.std())
    z = (series - mean) / std
    x, y = _windows(z, window)
    return x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:], mean, std


def _ar2(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n + 100)
    s = np.zeros(n + 100)
    for t in range(2, n + 100):
        s[t] = 0.6 * s[t - 1] - 0.3 * s[t - 2] + e[t]
    return 50.0 + 10.0 * s[100:]


def test_forecast_baselines_recover_ar2_and_beat_persistence():
    x_tr, y_tr, x_te, y_te, mean, std = _standardised_split(_ar2(600, seed=0), 12, n_test=150)
    found = bl.forecast_baselines(x_tr, y_tr, x_te, y_te, mean, std, max_lag=12)
    assert 2 <= found["ar"]["order"] <= 4
    assert found["ar"]["rmse"] < found["persistence"]["rmse"]
    # Innovation sd is 10 in original units, so a good AR one-step rmse is close to 10.
    assert found["ar"]["rmse"] == pytest.approx(10.0, rel=0.15)
    assert len(found["ar"]["predictions"]) == 150
    json.dumps(found)


def test_fit_ar_recovers_coefficients():
    _, phi = bl.fit_ar(_ar2(3000, seed=1), max_lag=8)
    assert len(phi) >= 2
    assert phi[0] == pytest.approx(0.6, abs=0.06)
    assert phi[1] == pytest.approx(-0.3, abs=0.06)


def test_persistence_on_random_walk_matches_hand_computation():
    rng = np.random.default_rng(5)
    walk = np.cumsum(rng.normal(size=300)) + 20.0
    x_tr, y_tr, x_te, y_te, mean, std = _standardised_split(walk, 5, n_test=50)
    found = bl.forecast_baselines(x_tr, y_tr, x_te, y_te, mean, std, max_lag=5)
    actual, last = walk[-50:], walk[-51:-1]
    assert found["persistence"]["rmse"] == pytest.approx(np.sqrt(np.mean((actual - last) ** 2)))
    assert found["persistence"]["mae"] == pytest.approx(np.mean(np.abs(actual - last)))


def test_ar_prediction_uses_only_its_window():
    x_tr, y_tr, x_te, y_te, mean, std = _standardised_split(_ar2(400, seed=2), 6, n_test=40)
    base = bl.forecast_baselines(x_tr, y_tr, x_te, y_te, mean, std, max_lag=6)
    # Change the last test target, and every window after position 20: earlier forecasts must not
    # move, and each forecast must equal the AR formula applied to its own window.
    y_changed, x_changed = y_te.copy(), x_te.copy()
    y_changed[-1] += 5.0
    x_changed[21:] += 3.0
    moved = bl.forecast_baselines(x_tr, y_tr, x_changed, y_changed, mean, std, max_lag=6)
    assert moved["ar"]["predictions"][:21] == base["ar"]["predictions"][:21]
    assert moved["ar"]["predictions"][21:] != base["ar"]["predictions"][21:]
    const, phi = bl.fit_ar(bl.series_from_windows(x_tr, y_tr) * std + mean, 6)
    window = x_te[7, :, 0] * std + mean
    by_hand = const + sum(phi[j] * window[-1 - j] for j in range(len(phi)))
    assert base["ar"]["predictions"][7] == pytest.approx(by_hand)


def test_series_from_windows_round_trip_and_rejects_shuffled_windows():
    series = np.arange(20, dtype=float)
    x, y = _windows(series, 4)
    np.testing.assert_array_equal(bl.series_from_windows(x, y), series)
    with pytest.raises(ValueError, match="contiguous"):
        bl.series_from_windows(x[::-1], y[::-1])


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

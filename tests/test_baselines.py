"""Validation-tuned baselines of deepfit.evaluate.baselines on small data with known answers."""

import json
import time

import numpy as np
import pytest

from deepfit.evaluate import baselines


def _split(x, y, n_train, n_val):
    cut = np.cumsum([n_train, n_val])
    return (
        (x[: cut[0]], y[: cut[0]]),
        (x[cut[0] : cut[1]], y[cut[0] : cut[1]]),
        (x[cut[1] :], y[cut[1] :]),
    )


def _scaled_signal(n=600, seed=0):
    """Labels from a feature of scale 0.01 beside a noise feature of scale 100."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(scale=0.01, size=n)
    noise = rng.normal(scale=100.0, size=n)
    x = np.stack([signal, noise], axis=1)[:, :, None]  # (n, 2, 1): inputs get flattened
    return _split(x, (signal > 0).astype(np.int64), 300, 150)


@pytest.mark.parametrize("name", ["logreg", "svm", "knn"])
def test_classifiers_choose_standardising_when_scales_differ(name):
    grid = {"standardize": [False, True]}
    found = getattr(baselines, name)(*_scaled_signal(), grid=grid, seed=1)
    assert found["params"] == {"standardize": True}
    assert found["val_accuracy"] > 0.9
    assert found["accuracy"] > 0.9
    assert len(found.pop("predictions")) == 150
    json.dumps(found)  # JSON-ready once the per-item key is popped


def test_svm_picks_the_gamma_that_fits():
    # Classes on two concentric circles: a tiny gamma is almost linear and fails.
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * np.pi, 600)
    label = rng.integers(0, 2, 600)
    radius = 1.0 + label + rng.normal(scale=0.1, size=600)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    found = baselines.svm(
        *_split(x, label, 300, 150), grid={"gamma": [1e-4, 1.0], "C": [1.0]}, seed=0
    )
    assert found["params"] == {"gamma": 1.0, "C": 1.0}
    assert found["accuracy"] > 0.95


def test_gbt_needs_interactions_for_xor_and_caps_training():
    # An additive model of stumps cannot express XOR; trees with more leaves can.
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(800, 2))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    splits = _split(x, y, 500, 150)
    grid = {"max_leaf_nodes": [2, 31], "max_iter": [20]}
    found = baselines.gbt(*splits, grid=grid, max_train=300, seed=2)
    assert found["params"] == {"max_leaf_nodes": 31, "max_iter": 20}
    assert found["accuracy"] > 0.9
    assert found["n_train"] == 300
    assert baselines.gbt(*splits, grid=grid, max_train=300, seed=2) == found


def test_ties_go_to_the_first_grid_value():
    x = np.repeat(np.eye(2), 50, axis=0)
    y = np.repeat([0, 1], 50)
    order = np.random.default_rng(0).permutation(100)
    found = baselines.knn(*_split(x[order], y[order], 50, 25), grid={"n_neighbors": [3, 1]}, seed=0)
    assert found["val_accuracy"] == 1.0
    assert found["params"] == {"n_neighbors": 3}


def test_grid_keys_and_values_are_checked():
    with pytest.raises(ValueError, match=r"^unknown baseline grid key 'depth'; allowed: \["):
        baselines.svm(*_scaled_signal(), grid={"depth": [3]}, seed=0)
    with pytest.raises(ValueError, match=r"^baseline grid 'C' must be a non-empty list, got \[\]$"):
        baselines.logreg(*_scaled_signal(), grid={"C": []}, seed=0)
    with pytest.raises(ValueError, match=r"^unknown baseline grid key 'standardize'"):
        baselines.gbt(*_scaled_signal(), grid={"standardize": [True]}, seed=0)


# --- forecasting ----------------------------------------------------------------------------


def _windowed(series, window, n_val, n_test):
    x = np.lib.stride_tricks.sliding_window_view(series, window)[:-1][..., None]
    y = series[window:, None]
    return _split(x.astype(np.float32), y.astype(np.float32), len(y) - n_val - n_test, n_val)


def test_persistence_in_original_units():
    series = np.arange(20, dtype=np.float64)  # standardised values; the next one is +1
    found = baselines.persistence(*_windowed(series, 3, 4, 5), mean=10.0, std=2.0)
    assert found["rmse"] == pytest.approx(2.0)
    assert found["mae"] == pytest.approx(2.0)
    assert found["val_rmse"] == pytest.approx(2.0)
    assert found["predictions"] == pytest.approx(list(np.arange(14, 19) * 2.0 + 10.0))


def test_seasonal_naive_reaches_before_a_short_window():
    series = np.tile([0.0, 1.0, 3.0, -1.0, 2.0], 20)  # period 5, windows of 3
    grid = {"period": [4, 5, 6]}
    found = baselines.seasonal_naive(*_windowed(series, 3, 20, 20), grid=grid)
    assert found["params"] == {"period": 5}
    assert found["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert found["val_rmse"] == pytest.approx(0.0, abs=1e-6)


def test_seasonal_naive_within_the_window_needs_no_contiguity():
    series = np.tile([0.0, 1.0, 3.0], 30)
    train, val, test = _windowed(series, 6, 10, 10)
    shuffled = tuple(a[::-1] for a in test)  # windows out of time order, each still complete
    found = baselines.seasonal_naive(train, val, shuffled, grid={"period": [3]})
    assert found["rmse"] == pytest.approx(0.0, abs=1e-6)


def test_seasonal_naive_beyond_the_window_refuses_gappy_splits():
    series = np.tile([0.0, 1.0, 3.0, -1.0, 2.0], 20)
    train, val, test = _windowed(series, 3, 20, 20)
    with pytest.raises(ValueError, match=r"^windows are not one contiguous series"):
        baselines.seasonal_naive(train, val, tuple(a[1:] for a in test), grid={"period": [5]})


def _ar2(n=600, seed=0):
    rng = np.random.default_rng(seed)
    series = np.zeros(n)
    for t in range(2, n):
        series[t] = 0.6 * series[t - 1] - 0.5 * series[t - 2] + rng.normal()
    return series


def test_ar_chooses_the_true_order_on_validation():
    found = baselines.ar(*_windowed(_ar2(), 5, 150, 150), grid={"p": [1, 2]})
    assert found["params"] == {"p": 2}
    persistence = baselines.persistence(*_windowed(_ar2(), 5, 150, 150))
    assert found["rmse"] < 0.8 * persistence["rmse"]
    assert 0.8 < found["rmse"] < 1.2  # the innovations have unit variance


def test_ar_order_must_fit_in_the_window():
    with pytest.raises(ValueError, match=r"^baseline grid p = 6 exceeds the window length 5$"):
        baselines.ar(*_windowed(_ar2(), 5, 150, 150), grid={"p": [6]})


# --- regression -----------------------------------------------------------------------------


def _linear_data(noise_only, n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10, 2))
    y = rng.normal(size=n) if noise_only else x.reshape(n, -1) @ rng.normal(size=20)
    return _split(x, y[:, None], 100, 100)


def test_constant_predicts_the_training_mean_in_original_units():
    train, val, test = _linear_data(noise_only=True)
    found = baselines.constant(train, val, test, mean=5.0, std=3.0)
    centre = float(train[1].mean())
    assert found["train_mean"] == pytest.approx(centre * 3.0 + 5.0)
    assert found["mse"] == pytest.approx(np.mean((test[1][:, 0] - centre) ** 2) * 9.0)
    assert found["params"] == {}


def test_linear_shrinks_only_when_there_is_nothing_to_learn():
    grid = {"alpha": [0.01, 1000.0]}
    assert baselines.linear(*_linear_data(False), grid=grid)["params"] == {"alpha": 0.01}
    assert baselines.linear(*_linear_data(True), grid=grid)["params"] == {"alpha": 1000.0}


# --- generation -----------------------------------------------------------------------------


def _blobs(n, seed):
    """4x4 'images' in [0, 1] around three fixed centres."""
    centres = np.random.default_rng(99).uniform(0.2, 0.8, size=(3, 16))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, 3, n)
    images = centres[pick] + rng.normal(scale=0.03, size=(n, 16))
    return np.clip(images, 0, 1).reshape(n, 4, 4).astype(np.float32)


def test_gmm_pca_finds_the_three_blobs():
    projection = np.random.default_rng(1).normal(size=(16, 6))

    def features(images):
        # FID matches two moments of the features: with linear features one Gaussian fitted to
        # the blobs would score as well as three, so the squares bring in the fourth moments.
        z = np.asarray(images).reshape(len(images), -1) @ projection
        return np.concatenate([z, z**2], axis=1)

    x_train, x_val, x_test = _blobs(600, 0), _blobs(200, 1), _blobs(200, 2)
    grid = {"components": [4], "mixtures": [1, 3]}
    found = baselines.gmm_pca(x_train, x_val, x_test, features, grid=grid, n_samples=300, seed=0)
    samples = found.pop("samples")
    assert found["params"] == {"components": 4, "mixtures": 3}
    one = {"components": [4], "mixtures": [1]}
    single = baselines.gmm_pca(x_train, x_val, x_test, features, grid=one, n_samples=300, seed=0)
    assert found["fid"] < 0.5 * single["fid"]
    assert samples.shape == (300, 4, 4)
    assert samples.dtype == np.float32
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    json.dumps(found)
    again = baselines.gmm_pca(x_train, x_val, x_test, features, grid=grid, n_samples=300, seed=0)
    np.testing.assert_array_equal(again.pop("samples"), samples)
    assert again == found


def test_nearest_train_distance_flags_copies():
    x_train, x_holdout = _blobs(300, 0), _blobs(100, 1)
    copies = baselines.nearest_train_distance(x_train[:50], x_train, x_holdout)
    assert copies["samples_median"] == 0.0
    assert copies["ratio"] == 0.0
    fresh = baselines.nearest_train_distance(_blobs(100, 2), x_train, x_holdout)
    assert 0.8 < fresh["ratio"] < 1.25
    with pytest.raises(ValueError, match=r"^most held-out images are exact copies of training"):
        baselines.nearest_train_distance(x_train[:50], x_train, x_train[:10])


# --- comparing ------------------------------------------------------------------------------


def test_strongest_reads_the_tuned_metric():
    classifiers = {
        "a": {"accuracy": 0.9, "val_accuracy": 0.99},
        "b": {"accuracy": 0.95, "val_accuracy": 0.9},
    }
    assert baselines.strongest(classifiers, "higher") == "b"
    forecasts = {
        "persistence": {"rmse": 30.0, "mae": 1.0, "val_rmse": 1},
        "ar": {"rmse": 18.0, "mae": 2.0, "val_rmse": 2},
    }
    assert baselines.strongest(forecasts, "lower") == "ar"
    assert baselines.strongest(forecasts, "lower", metric="mae") == "persistence"
    with pytest.raises(ValueError, match=r"^direction must be 'higher' or 'lower', got 'up'$"):
        baselines.strongest(forecasts, "up")


# --- digits, split as deepfit splits it -----------------------------------------------------


def _digits(seed=2024, val=0.15, test=0.2):
    """sklearn digits split like deepfit.data.prepare.split_indices; pixels / the training max."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x, y = bunch.images[..., None].astype(np.float32), bunch.target.astype(np.int64)
    rest, held = train_test_split(np.arange(len(y)), test_size=test, random_state=seed, stratify=y)
    tr, va = train_test_split(rest, test_size=val / (1 - test), random_state=seed, stratify=y[rest])
    x = (x / np.float64(x[tr].max())).astype(np.float32)
    return (x[tr], y[tr]), (x[va], y[va]), (x[held], y[held])


def test_tuned_digits_baselines_reach_the_target():
    splits = _digits()
    start = time.perf_counter()
    found = {
        name: getattr(baselines, name)(*splits, seed=2024)
        for name in ("logreg", "svm", "knn", "gbt")
    }
    seconds = time.perf_counter() - start
    best = baselines.strongest(found, "higher")
    assert found[best]["accuracy"] >= 0.985, {k: v["accuracy"] for k, v in found.items()}
    assert seconds < 60  # about 10 s on 2 shared cores; the stage budget is 20 s

"""Intervals and paired tests of deepfit.evaluate.stats against known values and their seeds."""

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from deepfit.evaluate import stats


def _wilson_by_hand(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    z = norm.ppf(0.5 + level / 2)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


def test_wilson_interval_of_known_proportions():
    assert stats.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775328), abs=1e-7)
    assert stats.wilson_interval(5, 10) == pytest.approx((0.2365931, 0.7634069), abs=1e-7)
    assert stats.wilson_interval(10, 10) == pytest.approx((0.7224672, 1.0), abs=1e-7)
    for k, n, level in [(3, 7, 0.9), (97, 100, 0.95), (350, 360, 0.99)]:
        assert stats.wilson_interval(k, n, level) == pytest.approx(_wilson_by_hand(k, n, level))


@pytest.mark.parametrize(("k", "n"), [(-1, 10), (11, 10), (0, 0)])
def test_wilson_interval_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError, match=r"need 0 <= successes <= n and n >= 1"):
        stats.wilson_interval(k, n)


def test_mcnemar_exact_on_a_hand_made_table():
    # 85 both right, 8 only A right, 2 only B right, 5 both wrong.
    a = np.array([1] * 85 + [1] * 8 + [0] * 2 + [0] * 5, dtype=bool)
    b = np.array([1] * 85 + [0] * 8 + [1] * 2 + [0] * 5, dtype=bool)
    # Two-sided binomial tail of 8 of 10 at p = 1/2: 2 * (1 + 10 + 45) / 1024.
    assert stats.mcnemar_exact(a, b) == pytest.approx(112 / 1024, abs=1e-12)
    assert stats.mcnemar_exact(a, b) == pytest.approx(binomtest(8, 10, 0.5).pvalue)
    assert stats.mcnemar_exact(b, a) == stats.mcnemar_exact(a, b)


def test_mcnemar_exact_is_one_when_the_models_agree_item_by_item():
    same = np.array([1, 0, 1, 1, 0], dtype=bool)
    assert stats.mcnemar_exact(same, same) == 1.0


def test_mcnemar_exact_needs_one_value_per_item():
    with pytest.raises(ValueError, match=r"one row per item, got lengths \[2, 3\]"):
        stats.mcnemar_exact([1, 0], [1, 0, 1])


def _regression_pair(n: int = 300):
    rng = np.random.default_rng(0)
    y = rng.normal(size=n)
    return y, y + rng.normal(scale=0.5, size=n)


def test_bootstrap_interval_is_deterministic_for_a_seed_and_brackets_the_estimate():
    y, pred = _regression_pair()
    first = stats.bootstrap_interval(stats.rmse, y, pred, seed=3)
    assert stats.bootstrap_interval(stats.rmse, y, pred, seed=3) == first
    assert stats.bootstrap_interval(stats.rmse, y, pred, seed=4) != first
    low, high = first
    assert low < stats.rmse(y, pred) < high
    assert 0.4 < low < high < 0.6
    mse_low, mse_high = stats.bootstrap_interval(stats.mse, y, pred, seed=3, n_boot=500)
    assert mse_low < stats.mse(y, pred) < mse_high


def test_bootstrap_interval_of_accuracy_is_close_to_wilson():
    correct = np.zeros(400, dtype=int)
    correct[:360] = 1
    truth = np.ones(400, dtype=int)
    low, high = stats.bootstrap_interval(stats.accuracy, truth, correct, seed=0)
    wilson = stats.wilson_interval(360, 400)
    assert low == pytest.approx(wilson[0], abs=0.01)
    assert high == pytest.approx(wilson[1], abs=0.01)


def test_bootstrap_interval_resamples_items_jointly():
    # Perfect predictions stay perfect in every paired resample: the interval is a point.
    y = np.arange(50.0)
    assert stats.bootstrap_interval(stats.rmse, y, y.copy(), seed=0, n_boot=200) == (0.0, 0.0)


def test_paired_bootstrap_p_values():
    y, pred = _regression_pair()
    errors = pred - y
    assert stats.paired_bootstrap(errors, errors, seed=0) == 1.0
    # Twice the error on every item: no resample of the centred differences gets that far.
    assert stats.paired_bootstrap(errors, 2 * errors, seed=0, n_boot=999) == pytest.approx(1e-3)
    # Same losses in another order: equal means, no evidence of a difference.
    shuffled = np.random.default_rng(1).permutation(errors)
    assert stats.paired_bootstrap(errors, shuffled, seed=0, loss="absolute") == 1.0
    # 2% worse on every item is tiny but consistent; pairing makes it significant.
    p = stats.paired_bootstrap(errors, 1.02 * errors, seed=1, loss="absolute")
    assert p == stats.paired_bootstrap(errors, 1.02 * errors, seed=1, loss="absolute")
    assert p < 0.01
    noisy = np.random.default_rng(2).normal(scale=0.5, size=errors.size)
    assert 0.01 < stats.paired_bootstrap(errors, noisy, seed=1) <= 1.0


def test_paired_bootstrap_names_the_allowed_losses():
    with pytest.raises(
        ValueError, match=r"^loss must be one of \['absolute', 'squared'\], got 'l3'$"
    ):
        stats.paired_bootstrap([1.0], [2.0], seed=0, loss="l3")


def test_frechet_bootstrap_is_seeded_and_centred_on_the_estimate():
    from deepfit.evaluate.metrics import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    b = rng.normal(loc=0.5, size=(300, 8))
    low, high = stats.frechet_bootstrap(a, b, n_boot=100, seed=5)
    assert (low, high) == stats.frechet_bootstrap(a, b, n_boot=100, seed=5)
    assert low < frechet_distance(a, b) < high
    assert high - low < 1.5


@pytest.mark.parametrize(
    ("p", "better", "verdict"),
    [
        (0.01, True, "better"),
        (0.01, False, "worse"),
        (0.05, True, "no significant difference"),
        (0.5, False, "no significant difference"),
    ],
)
def test_compare_verdict(p, better, verdict):
    assert stats.compare_verdict(p, better) == verdict
    assert verdict in stats.VERDICTS

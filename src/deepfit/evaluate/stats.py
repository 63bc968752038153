"""Uncertainty of test scores and paired tests between two models, seeded and deterministic."""

# Every function takes the seed it resamples with, so the same inputs and seed give the same
# interval or p-value on every machine: the numbers can go into DVC metrics files.

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

# Each resampled Fréchet distance costs a d x d matrix square root, so its bootstrap is kept
# short; a few hundred resamples place the ends of a 95% interval well enough to read its width.
FRECHET_BOOT = 200
VERDICTS = ("better", "no significant difference", "worse")


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (no continuity correction), e.g. accuracy."""
    from scipy.stats import binomtest

    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(
    statistic: Callable[..., float],
    *arrays: ArrayLike,
    n_boot: int = 2000,
    seed: int,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``, resampling items jointly.

    Row ``i`` of every array belongs to test item ``i`` (true value, prediction), so the arrays are
    resampled with the same indices: a paired bootstrap. E.g.
    ``bootstrap_interval(rmse, y_true, y_pred, seed=0)``.
    """
    from scipy.stats import bootstrap

    data = [np.asarray(a) for a in arrays]
    _common_length(data)
    result = bootstrap(
        data,
        lambda *resampled: statistic(*resampled),
        n_resamples=n_boot,
        vectorized=False,
        paired=True,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return float(ci.low), float(ci.high)


def frechet_bootstrap(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    n_boot: int = FRECHET_BOOT,
    *,
    seed: int,
    level: float = 0.95,
) -> tuple[float, float]:
    """Bias-corrected bootstrap interval of the Fréchet distance, resampling both feature sets.

    The two sets are independent samples (generated vs real), so each is resampled on its own.
    Resampling with replacement repeats rows, which shrinks the covariances' effective sample size
    and pushes every resampled distance up, often far above the estimate itself. So the
    percentile interval is shifted down by that bootstrap bias (mean of the resamples minus the
    estimate): the interval keeps the spread at this sample size and is centred on the estimate.
    FID itself is biased upwards by finite samples; compare FIDs only at equal set sizes.
    """
    from deepfit.evaluate.metrics import frechet_distance

    a, b = np.asarray(feats_a, dtype=np.float64), np.asarray(feats_b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for i in range(n_boot):
        rows_a = rng.integers(0, len(a), size=len(a))
        rows_b = rng.integers(0, len(b), size=len(b))
        values[i] = frechet_distance(a[rows_a], b[rows_b])
    bias = values.mean() - frechet_distance(a, b)
    low, high = _percentiles(values - bias, level)
    return max(low, 0.0), high


def mcnemar_exact(correct_a: ArrayLike, correct_b: ArrayLike) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the items exactly one model got right."""
    from scipy.stats import binomtest

    a = np.asarray(correct_a, dtype=bool).reshape(-1)
    b = np.asarray(correct_b, dtype=bool).reshape(-1)
    _common_length([a, b])
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0  # the models agree item by item: no evidence either way
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_bootstrap(
    errors_a: ArrayLike,
    errors_b: ArrayLike,
    n_boot: int = 2000,
    *,
    seed: int,
    loss: str = "squared",
) -> float:
    """Two-sided bootstrap p-value for ``mean loss(errors_a) == mean loss(errors_b)``.

    ``errors_*`` are per-item residuals (prediction - truth) of two models on the same items;
    ``loss`` is ``"squared"`` (compares MSE) or ``"absolute"`` (MAE). The per-item loss
    differences are centred to impose the null hypothesis, resampled, and the p-value is the share
    of resampled means at least as far from zero as the observed one, (k + 1) / (n_boot + 1) so
    that it is never 0 (Efron & Tibshirani 1993, ch. 16).
    """
    losses = {"squared": np.square, "absolute": np.abs}
    if loss not in losses:
        raise ValueError(f"loss must be one of {sorted(losses)}, got {loss!r}")
    a = np.asarray(errors_a, dtype=np.float64).reshape(-1)
    b = np.asarray(errors_b, dtype=np.float64).reshape(-1)
    n = _common_length([a, b])
    diff = losses[loss](a) - losses[loss](b)
    observed = abs(diff.mean())
    centred = diff - diff.mean()
    rows = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    extreme = np.sum(np.abs(centred[rows].mean(axis=1)) >= observed - 1e-12 * max(observed, 1.0))
    return float((extreme + 1) / (n_boot + 1))


def compare_verdict(p_value: float, better: bool, alpha: float = 0.05) -> str:
    """``"better"``, ``"worse"`` or ``"no significant difference"`` at significance ``alpha``."""
    if p_value >= alpha:
        return "no significant difference"
    return "better" if better else "worse"


# --- statistics to bootstrap ----------------------------------------------------------------


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of items whose predicted label equals the true one."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean squared error."""
    err = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    return float(np.mean(err**2))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(mse(y_true, y_pred)))


# --- helpers --------------------------------------------------------------------------------


def _common_length(arrays: list[np.ndarray]) -> int:
    if not arrays:
        raise ValueError("need at least one array")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"arrays must have one row per item, got lengths {sorted(lengths)}")
    n = lengths.pop()
    if n < 1:
        raise ValueError("arrays are empty")
    return n


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)

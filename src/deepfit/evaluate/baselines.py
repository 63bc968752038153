"""Classical baselines: fitted on train, hyper-parameters chosen on validation, scored on test."""

# Every baseline tries each combination of a small grid (a dict name -> list of values, declared
# in params.yaml), keeps the one with the best validation score (ties go to the first in grid
# order, so list the simpler value first) and reports it on the test split. Results are plain
# Python numbers, except the per-item key ("predictions", or "samples" for gmm_pca) that the
# caller pops before writing JSON: it feeds the paired tests in deepfit.evaluate.stats.
# scikit-learn, statsmodels and scipy are imported inside the functions that need them.

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

Split = tuple[ArrayLike, ArrayLike]
Grid = Mapping[str, Sequence[Any]]

# RBF-SVM training is quadratic in the number of samples; beyond this we fit on a stratified
# subset so that a 60k-image dataset still gets its baselines in minutes, not hours.
MAX_TRAIN = 10_000
# "standardize" is a grid key of its own: whether a StandardScaler (fitted on train) precedes the
# estimator is chosen on validation like any other hyper-parameter. Raw digits pixels share one
# scale, and standardising them inflates the near-constant border pixels.
LOGREG_GRID: dict[str, list[Any]] = {"standardize": [True, False], "C": [0.1, 1.0, 10.0]}
SVM_GRID: dict[str, list[Any]] = {
    "standardize": [False, True],
    "C": [1.0, 3.0, 10.0, 30.0],
    "gamma": ["scale", 0.01, 0.03, 0.1],
}
KNN_GRID: dict[str, list[Any]] = {
    "standardize": [False, True],
    "n_neighbors": [1, 3, 5, 9],
    "weights": ["uniform", "distance"],
}
# Trees do not care about feature scale, so there is no "standardize" key.
GBT_GRID: dict[str, list[Any]] = {"learning_rate": [0.1, 0.3], "max_leaf_nodes": [15, 31]}
# The sunspot cycle is about 11 years long.
SEASONAL_GRID: dict[str, list[Any]] = {"period": [11]}
# Every value must be at most the window length (params: datasets.<name>.window).
AR_GRID: dict[str, list[Any]] = {"p": [1, 2, 3, 4, 6, 8, 10, 12]}
RIDGE_GRID: dict[str, list[Any]] = {"alpha": [0.01, 0.1, 1.0, 10.0, 100.0]}
GMM_GRID: dict[str, list[Any]] = {"components": [16, 32], "mixtures": [10, 30]}
NGRAM_GRID: dict[str, list[Any]] = {"order": [2, 3, 4, 5, 6], "discount": [0.75, 0.9]}
TFIDF_GRID: dict[str, list[Any]] = {"ngram_range": [[1, 1], [1, 2]], "C": [1.0, 10.0]}
# Grid keys of tfidf_logreg that set the TF-IDF features; C sets the logistic regression.
TFIDF_KEYS = ("ngram_range", "min_df", "max_df", "max_features", "sublinear_tf")


# --- classification -------------------------------------------------------------------------


def logreg(
    train: Split,
    val: Split,
    test: Split,
    grid: Grid = LOGREG_GRID,
    *,
    seed: int,
    max_train: int | None = MAX_TRAIN,
) -> dict[str, Any]:
    """Multinomial logistic regression on flattened inputs (grid keys: standardize, C, ...)."""
    from sklearn.linear_model import LogisticRegression

    return _classifier(
        lambda: LogisticRegression(max_iter=2000, random_state=seed),
        True,
        train,
        val,
        test,
        grid,
        seed,
        max_train,
    )


def svm(
    train: Split,
    val: Split,
    test: Split,
    grid: Grid = SVM_GRID,
    *,
    seed: int,
    max_train: int | None = MAX_TRAIN,
) -> dict[str, Any]:
    """RBF support-vector machine on flattened inputs (grid keys: standardize, C, gamma, ...)."""
    from sklearn.svm import SVC

    return _classifier(
        lambda: SVC(kernel="rbf", random_state=seed),
        True,
        train,
        val,
        test,
        grid,
        seed,
        max_train,
    )


def knn(
    train: Split,
    val: Split,
    test: Split,
    grid: Grid = KNN_GRID,
    *,
    seed: int,
    max_train: int | None = MAX_TRAIN,
) -> dict[str, Any]:
    """k-nearest neighbours on flattened inputs (grid keys: standardize, n_neighbors, weights)."""
    from sklearn.neighbors import KNeighborsClassifier

    return _classifier(KNeighborsClassifier, True, train, val, test, grid, seed, max_train)


def gbt(
    train: Split,
    val: Split,
    test: Split,
    grid: Grid = GBT_GRID,
    *,
    seed: int,
    max_train: int | None = MAX_TRAIN,
) -> dict[str, Any]:
    """Histogram gradient-boosted trees, 100 rounds unless the grid sets max_iter."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    # No early stopping: it would carve its own validation split out of train, and the rounds
    # are a grid key like the others.
    return _classifier(
        lambda: HistGradientBoostingClassifier(early_stopping=False, random_state=seed),
        False,
        train,
        val,
        test,
        grid,
        seed,
        max_train,
    )


def _classifier(
    make: Callable[[], Any],
    scalable: bool,
    train: Split,
    val: Split,
    test: Split,
    grid: Grid,
    seed: int,
    max_train: int | None,
) -> dict[str, Any]:
    """Tune ``make()`` (on flattened inputs, behind a scaler when ``standardize``) on
    validation accuracy; ``{"accuracy", "f1_macro", "val_accuracy", ...}``."""
    allowed = set(make().get_params()) | ({"standardize"} if scalable else set())

    def build(params: dict[str, Any]) -> Any:
        return _pipeline(make(), params)

    return _tuned_classifier(build, allowed, _flat, train, val, test, grid, seed, max_train)


def _tuned_classifier(
    build: Callable[[dict[str, Any]], Any],
    allowed: set[str],
    inputs: Callable[[ArrayLike], Any],
    train: Split,
    val: Split,
    test: Split,
    grid: Grid,
    seed: int,
    max_train: int | None,
) -> dict[str, Any]:
    """Fit ``build(params)`` on ``inputs(x)`` of train for every grid combination, keep the best
    validation accuracy; ``{"accuracy", "f1_macro", "val_accuracy", "params", ...}``."""
    from sklearn.metrics import f1_score

    x_train, y_train = _subsample(inputs(train[0]), _y(train[1]), max_train, seed)
    x_val, y_val = inputs(val[0]), _y(val[1])

    def score(params: dict[str, Any]) -> tuple[float, Any]:
        model = build(params).fit(x_train, y_train)
        return float(np.mean(model.predict(x_val) == y_val)), model

    params, val_accuracy, model = _select(grid, score, "higher", allowed)
    y_test = _y(test[1])
    pred = model.predict(inputs(test[0]))
    return {
        "accuracy": float(np.mean(pred == y_test)),
        "f1_macro": float(f1_score(y_test, pred, average="macro", zero_division=0)),
        "val_accuracy": val_accuracy,
        "params": params,
        "n_train": len(y_train),
        "predictions": pred.tolist(),
    }


def _pipeline(estimator: Any, params: dict[str, Any]) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rest = {k: v for k, v in params.items() if k != "standardize"}
    estimator.set_params(**rest)
    # The scaler sits in the pipeline so it is fitted on the training split only.
    return make_pipeline(StandardScaler(), estimator) if params.get("standardize") else estimator


# --- text classification (raw strings) -------------------------------------------------------


def tfidf_logreg(
    train: Split,
    val: Split,
    test: Split,
    grid: Grid = TFIDF_GRID,
    *,
    seed: int,
    max_train: int | None = None,
) -> dict[str, Any]:
    """Logistic regression on TF-IDF features of the raw texts (scikit-learn's word tokens,
    lower-cased; sublinear term frequencies unless the grid says otherwise), the vocabulary and
    idf weights fitted on train. Grid keys: ngram_range ([1, 2]: words and word pairs), min_df,
    max_df, max_features, sublinear_tf, and C. Trains on every text (no subsample) by default:
    the fit is linear in the number of texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def build(params: dict[str, Any]) -> Any:
        features = {k: v for k, v in params.items() if k in TFIDF_KEYS}
        if "ngram_range" in features:
            features["ngram_range"] = _ngram_range(features["ngram_range"])
        classifier = {k: v for k, v in params.items() if k not in TFIDF_KEYS}
        return make_pipeline(
            TfidfVectorizer(sublinear_tf=True).set_params(**features),
            LogisticRegression(max_iter=2000, random_state=seed).set_params(**classifier),
        )

    allowed = {*TFIDF_KEYS, "C"}
    return _tuned_classifier(build, allowed, _texts, train, val, test, grid, seed, max_train)


def _ngram_range(value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in value)
        or not 1 <= value[0] <= value[1]
    ):
        raise ValueError(
            f"baseline grid 'ngram_range' values must be [min_n, max_n] with 1 <= min_n <= max_n,"
            f" got {value!r}"
        )
    return int(value[0]), int(value[1])


# --- forecasting (windows of one standardised series) ---------------------------------------


def persistence(
    train: Split, val: Split, test: Split, mean: float = 0.0, std: float = 1.0
) -> dict[str, Any]:
    """Tomorrow equals today: each window's last value. ``{"mse", "rmse", "mae", "val_rmse"}``."""
    return _tuned_regression(
        lambda _: lambda split: _windows({"val": val, "test": test}[split][0])[:, -1],
        val,
        test,
        mean,
        std,
        {},
        set(),
        "rmse",
    )


def seasonal_naive(
    train: Split,
    val: Split,
    test: Split,
    mean: float = 0.0,
    std: float = 1.0,
    grid: Grid = SEASONAL_GRID,
) -> dict[str, Any]:
    """The value ``period`` steps before the target, ``period`` chosen on validation.

    Within the window that value is the window's own; a period longer than the window reaches
    into the series before it, which is rebuilt from the train, val and test windows. That needs
    the three splits to be consecutive stride-1 windows in time order (as deepfit's windowed
    series are); it uses only values observed before each target, as a one-step-ahead forecast
    may. A ``ValueError`` says so otherwise.
    """
    splits = {"train": train, "val": val, "test": test}

    def make(params: dict[str, Any]) -> Callable[[str], np.ndarray]:
        period = _positive_int(params["period"], "period")
        return lambda split: _value_back(splits, split, period)

    return _tuned_regression(make, val, test, mean, std, grid, {"period"}, "rmse")


def ar(
    train: Split,
    val: Split,
    test: Split,
    mean: float = 0.0,
    std: float = 1.0,
    grid: Grid = AR_GRID,
) -> dict[str, Any]:
    """AR(p) with a constant, fitted on the training series only, p chosen on validation.

    Each target is predicted from the true values in its own window, so every p must be at most
    the window length. ``{"mse", "rmse", "mae", "val_rmse", "params": {"p"}, "predictions"}``.
    """
    from statsmodels.tsa.ar_model import AutoReg

    series = _series(*train)
    width = _windows(test[0]).shape[1]
    inputs = {"val": _windows(val[0]), "test": _windows(test[0])}

    def make(params: dict[str, Any]) -> Callable[[str], np.ndarray]:
        p = _positive_int(params["p"], "p")
        if p > width:
            raise ValueError(f"baseline grid p = {p} exceeds the window length {width}")
        coef = np.asarray(AutoReg(series, lags=p, trend="c").fit().params, dtype=np.float64)
        # coef[1] multiplies the most recent value, so read each window backwards.
        return lambda split: coef[0] + inputs[split][:, ::-1][:, :p] @ coef[1:]

    return _tuned_regression(make, val, test, mean, std, grid, {"p"}, "rmse")


# --- regression ----------------------------------------------------------------------------


def constant(
    train: Split, val: Split, test: Split, mean: float = 0.0, std: float = 1.0
) -> dict[str, Any]:
    """Predict the training mean. ``{"mse", "rmse", "mae", "val_mse", "train_mean", ...}``."""
    centre = float(np.mean(_y(train[1], float)))
    found = _tuned_regression(
        lambda _: lambda split: np.full(len(_y({"val": val, "test": test}[split][1])), centre),
        val,
        test,
        mean,
        std,
        {},
        set(),
        "mse",
    )
    return {**found, "train_mean": centre * std + mean}


def linear(
    train: Split,
    val: Split,
    test: Split,
    mean: float = 0.0,
    std: float = 1.0,
    grid: Grid = RIDGE_GRID,
) -> dict[str, Any]:
    """Ridge regression on the flattened inputs, ``alpha`` chosen on validation."""
    from sklearn.linear_model import Ridge

    return _flat_regression(Ridge, {}, train, val, test, mean, std, grid)


def gbt_regression(
    train: Split,
    val: Split,
    test: Split,
    mean: float = 0.0,
    std: float = 1.0,
    grid: Grid = GBT_GRID,
) -> dict[str, Any]:
    """Histogram gradient-boosted regression trees on the flattened inputs, tuned on validation."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return _flat_regression(
        HistGradientBoostingRegressor, {"random_state": 0}, train, val, test, mean, std, grid
    )


def _flat_regression(
    estimator: type,
    fixed: dict[str, Any],
    train: Split,
    val: Split,
    test: Split,
    mean: float,
    std: float,
    grid: Grid,
) -> dict[str, Any]:
    """A scikit-learn regressor on the flattened inputs, its ``grid`` tuned on validation MSE."""
    x_train, y_train = _flat(train[0]), _y(train[1], float)
    inputs = {"val": _flat(val[0]), "test": _flat(test[0])}

    def make(params: dict[str, Any]) -> Callable[[str], np.ndarray]:
        model = estimator(**fixed, **params).fit(x_train, y_train)
        return lambda split: model.predict(inputs[split])

    allowed = set(estimator().get_params())
    return _tuned_regression(make, val, test, mean, std, grid, allowed, "mse")


def _tuned_regression(
    make: Callable[[dict[str, Any]], Callable[[str], np.ndarray]],
    val: Split,
    test: Split,
    mean: float,
    std: float,
    grid: Grid,
    allowed: set[str],
    metric: str,
) -> dict[str, Any]:
    """Tune ``make(params)("val")`` on validation ``metric``; report ``make(best)("test")``.

    Predictions and targets are standardised; scores are in original units,
    ``value = standardised * std + mean``.
    """
    from deepfit.evaluate.metrics import regression_metrics

    def score(params: dict[str, Any]) -> tuple[float, Any]:
        predict = make(params)
        actual = _y(val[1], float) * std + mean
        return regression_metrics(actual, predict("val") * std + mean)[metric], predict

    params, val_score, predict = _select(grid, score, "lower", allowed)
    predicted = predict("test") * std + mean
    return {
        **regression_metrics(_y(test[1], float) * std + mean, predicted),
        f"val_{metric}": val_score,
        "params": params,
        "predictions": predicted.tolist(),
    }


# --- generation ----------------------------------------------------------------------------


def gmm_pca(
    x_train: ArrayLike,
    x_val: ArrayLike,
    x_test: ArrayLike,
    features: Callable[[np.ndarray], ArrayLike],
    grid: Grid = GMM_GRID,
    *,
    n_samples: int = 1000,
    seed: int,
) -> dict[str, Any]:
    """A Gaussian mixture in the PCA space of the training images, sampled back to pixels.

    ``(components, mixtures)`` is chosen by the Fréchet distance between ``features`` of the
    samples and of the validation images (``features`` maps images to (n, d), e.g. the scorer
    network's). The test FID uses a fresh draw from the chosen model, so the draw that won on
    validation is not reused. Samples are clipped to the training range ([0, 1] for deepfit's
    scaled images). Returns ``{"params", "val_fid", "fid", "n_samples",
    "samples": ndarray (n_samples, *image_shape)}``; pop ``samples`` before writing JSON.
    """
    from deepfit.evaluate.metrics import frechet_distance

    train = np.asarray(x_train)
    flat = _flat(train)
    real_val = np.asarray(features(np.asarray(x_val)))
    streams = np.random.SeedSequence(seed).spawn(2)  # validation draw, test draw

    def score(params: dict[str, Any]) -> tuple[float, Any]:
        model = _fit_gmm(flat, params, seed)
        samples = _draw(model, n_samples, streams[0], train)
        return frechet_distance(np.asarray(features(samples)), real_val), model

    params, val_fid, model = _select(grid, score, "lower", {"components", "mixtures"})
    samples = _draw(model, n_samples, streams[1], train)
    fid = frechet_distance(np.asarray(features(samples)), np.asarray(features(np.asarray(x_test))))
    return {
        "params": params,
        "val_fid": val_fid,
        "fid": fid,
        "n_samples": n_samples,
        "samples": samples,
    }


def _fit_gmm(flat: np.ndarray, params: dict[str, Any], seed: int) -> tuple[Any, Any]:
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    components = _positive_int(params["components"], "components")
    mixtures = _positive_int(params["mixtures"], "mixtures")
    if components > min(flat.shape):
        raise ValueError(
            f"baseline grid components = {components} exceeds min(n_train, pixels) = "
            f"{min(flat.shape)}"
        )
    pca = PCA(n_components=components, random_state=seed).fit(flat)
    mixture = GaussianMixture(mixtures, covariance_type="full", random_state=seed)
    return pca, mixture.fit(pca.transform(flat))


def _draw(
    model: tuple[Any, Any], n: int, stream: np.random.SeedSequence, train: np.ndarray
) -> np.ndarray:
    pca, mixture = model
    rng = np.random.default_rng(stream)
    # GaussianMixture.sample draws from its own random_state and returns the samples grouped by
    # mixture component; a fresh state per draw and a shuffle make any prefix a fair sample.
    mixture.set_params(random_state=int(rng.integers(2**31 - 1)))
    coded, _ = mixture.sample(n)
    pixels = pca.inverse_transform(coded[rng.permutation(n)])
    pixels = np.clip(pixels, train.min(), train.max())
    return pixels.reshape(n, *train.shape[1:]).astype(train.dtype)


def nearest_train_distance(
    samples: ArrayLike, x_train: ArrayLike, x_holdout: ArrayLike
) -> dict[str, float]:
    """Memorisation check: median Euclidean distance to the nearest training image.

    ``samples_median`` for generated images, ``holdout_median`` for real images the generator
    never saw; ``ratio = samples_median / holdout_median``. A ratio well below 1 means samples sit
    closer to training images than fresh real images do: copies rather than new digits.
    """
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=1).fit(_flat(x_train))
    gen = float(np.median(index.kneighbors(_flat(samples))[0]))
    real = float(np.median(index.kneighbors(_flat(x_holdout))[0]))
    if real == 0.0:
        raise ValueError("most held-out images are exact copies of training images")
    return {"samples_median": gen, "holdout_median": real, "ratio": gen / real}


# --- language models (windows of character ids) ----------------------------------------------


def unigram(train: Split, val: Split, test: Split, vocab: int) -> dict[str, Any]:
    """Add-one smoothed training character frequencies; ``"predictions"`` are per-target bits."""
    from deepfit.evaluate.ngram import unigram_bits

    y_train = np.asarray(train[1])
    val_bits = unigram_bits(y_train, np.asarray(val[1]), vocab)
    return _language_result(unigram_bits(y_train, np.asarray(test[1]), vocab), val_bits, {})


def ngram(
    train: Split, val: Split, test: Split, vocab: int, grid: Grid = NGRAM_GRID
) -> dict[str, Any]:
    """Interpolated character n-gram (absolute discounting), order and discount chosen on
    validation bits per character; ``"predictions"`` are the test targets' bits (n, T)."""
    from deepfit.evaluate.ngram import fit_counts, ngram_bits

    x_train, y_train = np.asarray(train[0]), np.asarray(train[1])
    x_val, y_val = np.asarray(val[0]), np.asarray(val[1])
    orders = [_positive_int(order, "order") for order in grid.get("order", [5])]
    levels = fit_counts(x_train, y_train, max(orders), vocab)  # each order reuses a prefix

    def score(params: dict[str, Any]) -> tuple[float, Any]:
        kept = levels[: params["order"] - 1]
        bits = ngram_bits(kept, y_train, x_val, y_val, vocab, float(params["discount"]))
        return float(bits.mean()), kept

    grid = {"order": [5], "discount": [0.75], **grid}
    params, val_bpc, kept = _select(grid, score, "lower", {"order", "discount"})
    x_test, y_test = (np.asarray(a) for a in test)
    bits = ngram_bits(kept, y_train, x_test, y_test, vocab, float(params["discount"]))
    return _language_result(bits, val_bpc, params)


def _language_result(test_bits: np.ndarray, val: Any, params: dict[str, Any]) -> dict[str, Any]:
    val_bpc = float(np.mean(val))
    bpc = float(np.mean(test_bits))
    return {
        "bpc": bpc,
        "perplexity": float(2.0**bpc),
        "val_bpc": val_bpc,
        "params": params,
        "predictions": test_bits.astype(np.float32),
    }


# --- translation (texts) ----------------------------------------------------------------------


def length_mode(
    train: tuple[list[str], list[str]], val: tuple[list[str], list[str]], test: tuple[list, list]
) -> dict[str, Any]:
    """Rule-free: the most frequent training target among sources of the same number of words
    (the overall most frequent target for an unseen length). Inputs are (sources, targets)."""
    from collections import Counter

    from deepfit.evaluate.metrics import translation_metrics

    by_length: dict[int, Counter] = {}
    for source, target in zip(*train, strict=True):
        by_length.setdefault(len(source.split()), Counter())[target] += 1
    overall = Counter(train[1]).most_common(1)[0][0]

    def predict(sources: list[str]) -> list[str]:
        found = {n: c.most_common(1)[0][0] for n, c in by_length.items()}
        return [found.get(len(s.split()), overall) for s in sources]

    return _translation_result(val, test, predict(val[0]), predict(test[0]), translation_metrics)


def copy(
    train: tuple[list[str], list[str]], val: tuple[list[str], list[str]], test: tuple[list, list]
) -> dict[str, Any]:
    """Rule-free: the source text as its own translation (scores the words both languages
    share; its character error rate is how far apart the languages are)."""
    from deepfit.evaluate.metrics import translation_metrics

    return _translation_result(val, test, list(val[0]), list(test[0]), translation_metrics)


def _translation_result(val, test, val_pred, test_pred, score) -> dict[str, Any]:
    found = score(list(test[1]), test_pred)
    return {
        **found,
        "val_exact_match": score(list(val[1]), val_pred)["exact_match"],
        "params": {},
        "predictions": np.asarray(test_pred, dtype=str),
    }


# --- comparing baselines -------------------------------------------------------------------


def strongest(
    results: Mapping[str, Mapping[str, Any]], direction: str, metric: str | None = None
) -> str:
    """Name of the baseline with the best test score (``direction`` "higher" or "lower").

    ``metric`` defaults to the one each result was tuned on (its ``val_<metric>`` key). Chosen on
    test on purpose: the bar a model must clear is then the best any baseline reached.
    """
    if not results:
        raise ValueError("no baseline results to compare")
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")

    def score(name: str) -> float:
        found = results[name]
        key = metric or next((k[4:] for k in found if k.startswith("val_")), None)
        if key is None or key not in found:
            raise ValueError(f"baseline {name!r} has no test score {key or '(val_<metric>)'!r}")
        return float(found[key])

    names = list(results)
    best = max(names, key=score) if direction == "higher" else min(names, key=score)
    return best


# --- helpers -------------------------------------------------------------------------------


def _select(
    grid: Grid,
    score: Callable[[dict[str, Any]], tuple[float, Any]],
    direction: str,
    allowed: set[str],
) -> tuple[dict[str, Any], float, Any]:
    """(params, validation score, fitted) of the best grid combination; ties go to the first."""
    from threadpoolctl import threadpool_limits

    best: tuple[dict[str, Any], float, Any] | None = None
    # These fits are small: OpenMP/BLAS threads on shared cores cost more than they save
    # (gradient boosting most of all), so each fit runs on one thread.
    with threadpool_limits(limits=1):
        for params in _combinations(grid, allowed):
            value, fitted = score(params)
            if best is None or (value > best[1] if direction == "higher" else value < best[1]):
                best = (params, value, fitted)
    assert best is not None  # _combinations yields at least one combination
    return best


def _combinations(grid: Grid, allowed: set[str]) -> Iterator[dict[str, Any]]:
    unknown = sorted(set(grid) - allowed)
    if unknown:
        raise ValueError(f"unknown baseline grid key {unknown[0]!r}; allowed: {sorted(allowed)}")
    for key, values in grid.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"baseline grid {key!r} must be a non-empty list, got {values!r}")
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield {k: _plain(v) for k, v in zip(keys, values, strict=True)}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"baseline grid {key!r} values must be positive integers, got {value!r}")
    return value


def _flat(x: ArrayLike) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    return arr.reshape(arr.shape[0], -1)


def _texts(x: ArrayLike) -> np.ndarray:
    """One string per sample, as scikit-learn's text vectorizers read them."""
    return np.asarray(x, dtype=object).reshape(-1)


def _y(y: ArrayLike, dtype: type = np.int64) -> np.ndarray:
    arr = np.asarray(y).reshape(-1)
    return arr.astype(dtype) if dtype is float else arr


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


def _series(x: ArrayLike, y: ArrayLike, atol: float = 1e-5) -> np.ndarray:
    """The series behind consecutive stride-1 windows ``x`` and their next values ``y``."""
    windows, targets = _windows(x), _y(y, float)
    if windows.shape[0] != targets.size:
        raise ValueError(f"{windows.shape[0]} windows but {targets.size} targets")
    series = np.concatenate([windows[0], targets])
    expected = np.lib.stride_tricks.sliding_window_view(series, windows.shape[1])[: len(targets)]
    if not np.allclose(windows, expected, atol=atol, rtol=0.0):
        raise ValueError(
            "windows are not one contiguous series (they must be in time order with stride 1)"
        )
    return series


def _value_back(splits: Mapping[str, Split], split: str, lag: int) -> np.ndarray:
    """For each target of ``split``, the series value ``lag`` steps before it (standardised)."""
    windows = _windows(splits[split][0])
    if lag <= windows.shape[1]:
        return windows[:, -lag]
    order = list(splits)
    x = np.concatenate([_windows(splits[s][0]) for s in order])
    y = np.concatenate([_y(splits[s][1], float) for s in order])
    series = _series(x, y)
    # Targets of ``split`` follow the first window and the targets of the splits before it.
    start = windows.shape[1] + sum(len(_y(splits[s][1])) for s in order[: order.index(split)])
    where = start + np.arange(len(windows)) - lag
    if where.min() < 0:
        raise ValueError(f"period {lag} reaches before the start of the series")
    return series[where]

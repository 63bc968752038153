"""Raw data sources: bundled sets, the adding-problem generator, user files and keras.datasets.

Each loader returns plain arrays; splitting and scaling happen in ``prepare``. Heavy libraries
(scikit-learn, statsmodels, Keras) are imported inside the loader that needs them.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deepfit.data.config import raw_path_problem
from deepfit.data.errors import DataError
from deepfit.outputs import one_line

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
KERAS_CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": FASHION_MNIST_CLASSES,
    "cifar10": CIFAR10_CLASSES,
    "imdb": ["neg", "pos"],  # aclImdb's folder names
}


# --- bundled ---------------------------------------------------------------------------------


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits: images (n, 8, 8, 1) with raw values 0..16, labels int64."""
    from sklearn import datasets

    bunch = datasets.load_digits()
    return bunch.images[..., None].astype(np.float32), bunch.target.astype(np.int64)


def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """statsmodels' yearly sunspot numbers 1700-2008: (years int64, values float64)."""
    from statsmodels.datasets import sunspots

    frame = sunspots.load_pandas().data
    return frame["YEAR"].to_numpy().astype(np.int64), frame["SUNACTIVITY"].to_numpy(np.float64)


def adding_problem(length: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` adding-problem sequences: x (n, length, 2) float32, y (n, 1) float32.

    Channel 0 holds U(0, 1) values, channel 1 marks exactly two of them, one in each half of
    the sequence (the classic formulation); the target is the sum of the two marked values.
    """
    half = length // 2
    values = rng.random((n, length)).astype(np.float32)
    rows = np.arange(n)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    markers = np.zeros((n, length), dtype=np.float32)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    target = values[rows, first] + values[rows, second]
    return np.stack([values, markers], axis=-1), target[:, None].astype(np.float32)


# --- user files ------------------------------------------------------------------------------


def resolve_raw(path: str, raw_dir: Path, key: str = "path") -> Path:
    """The existing file ``raw_dir/path``; a DataError naming ``key`` or the file otherwise."""
    problem = raw_path_problem(path)
    if problem:
        raise DataError(f"{key}: {problem}")
    file = Path(raw_dir) / path
    if not file.is_file():
        raise DataError(f"{key}: file {file} not found (user files live under {raw_dir}/)")
    refuse_outside_repo(file, raw_dir)
    return file


def resolve_raw_dir(path: str, raw_dir: Path, key: str = "path") -> Path:
    """The existing folder ``raw_dir/path``; a DataError naming ``key`` or the folder otherwise."""
    problem = raw_path_problem(path)
    if problem:
        raise DataError(f"{key}: {problem}")
    folder = Path(raw_dir) / path
    if not folder.is_dir():
        raise DataError(f"{key}: folder {folder} not found (user data lives under {raw_dir}/)")
    refuse_outside_repo(folder, raw_dir)
    return folder


def repo_root(raw_dir: Path) -> Path:
    """The repository that holds ``raw_dir`` (data/raw/ sits two levels below it)."""
    return Path(raw_dir).absolute().parents[1].resolve()


def refuse_outside_repo(path: Path, raw_dir: Path, root: Path | None = None) -> None:
    """DataError naming ``path`` when it (or a folder above it) is a symlink leading out of the
    repository: DVC would not see such data change, and a run could not be reproduced."""
    root = root or repo_root(raw_dir)
    target = Path(path).resolve()
    if not target.is_relative_to(root):
        raise DataError(
            f"{path}: symlink to {target}, outside the repository; copy the data under "
            f"{raw_dir}/ or track it with `dvc add`"
        )


def read_npz(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` and ``y`` of a user .npz (no pickles), or a DataError naming the file."""
    try:
        with np.load(file, allow_pickle=False) as archive:
            names = list(archive.files)
            arrays = {key: archive[key] for key in ("x", "y") if key in names}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{file}: not a readable .npz of plain arrays ({one_line(exc)})") from exc
    if len(arrays) < 2:
        raise DataError(f"{file}: needs arrays 'x' and 'y'; found: {', '.join(names) or 'none'}")
    return arrays["x"], arrays["y"]


def shape_for_kind(x: np.ndarray, kind: str, file: Path) -> np.ndarray:
    """``x`` as float32 in the layout of ``kind``, adding a channel/feature axis where implied."""
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{file}: x must be numeric, got dtype {x.dtype}")
    allowed = {"image": (3, 4), "sequence": (2, 3), "vector": (2,)}[kind]
    if x.ndim not in allowed:
        layout = {"image": "(n, H, W[, C])", "sequence": "(n, T[, F])", "vector": "(n, F)"}[kind]
        raise DataError(f"{file}: kind {kind!r} needs x shaped {layout}, got {x.shape}")
    x = x.astype(np.float32)
    # the short form (no channel/feature axis) means a single channel/feature.
    return x[..., None] if x.ndim == allowed[0] and kind != "vector" else x


def targets_for_task(y: np.ndarray, task: str, file: Path) -> np.ndarray:
    """Classification: labels (n,); regression: float targets (n, k)."""
    if task == "classification":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DataError(f"{file}: classification needs y shaped (n,) labels, got {y.shape}")
        return y
    if not np.issubdtype(y.dtype, np.number) or y.ndim not in (1, 2):
        raise DataError(f"{file}: regression needs numeric y shaped (n,) or (n, k), {describe(y)}")
    return (y[:, None] if y.ndim == 1 else y).astype(np.float64)


# --- keras.datasets --------------------------------------------------------------------------


def load_keras(
    name: str, key: str = "name", **options: Any
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``keras.datasets.<name>.load_data(**options)``; fails in one line when offline and not
    cached."""
    import keras  # only this source needs TensorFlow

    return _from_keras_cache(lambda: getattr(keras.datasets, name).load_data(**options), name, key)


def load_imdb(
    key: str = "name",
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """keras.datasets.imdb as text: every review's word ids turned back into its words with
    ``imdb.get_word_index()`` (Keras stores them lower-cased, without punctuation), joined by
    spaces; labels 0 (negative) and 1 (positive). Ids the index does not know are dropped."""
    import keras

    # No start or unknown markers and no id shift: the stored ids are the word index's own.
    everything = {"start_char": None, "oov_char": None, "index_from": 0, "num_words": 2**62}
    (x_train, y_train), (x_test, y_test) = load_keras("imdb", key, **everything)
    index = _from_keras_cache(keras.datasets.imdb.get_word_index, "imdb", key)
    words = {int(i): word for word, i in index.items()}

    def texts(reviews: np.ndarray) -> np.ndarray:
        decoded = [" ".join(words[i] for i in ids if i in words) for ids in reviews]
        return np.array(decoded, dtype=object)

    labels = (np.asarray(y).reshape(-1).astype(np.int64) for y in (y_train, y_test))
    return (texts(x_train), next(labels)), (texts(x_test), next(labels))


def _from_keras_cache(load: Callable[[], Any], name: str, key: str) -> Any:
    """``load()``, a keras.datasets call; its failures as one-line DataErrors naming ``key``."""
    try:
        return load()
    except Exception as exc:  # Keras wraps download failures in a bare Exception
        if _is_download_failure(exc):
            raise DataError(
                f"{key}: keras dataset {name!r} is not in the Keras cache ({keras_cache_dir()}) "
                f"(or the cached copy failed Keras' hash check) and the machine is offline "
                f"({one_line(exc)})"
            ) from exc
        raise DataError(
            f"{key}: keras dataset {name!r} could not be read from the Keras cache "
            f"({keras_cache_dir()}): {one_line(exc)}"
        ) from exc


def _is_download_failure(exc: BaseException) -> bool:
    # keras.utils.get_file re-raises URLError/HTTPError as Exception("URL fetch failure on ...")
    network = urllib.error.URLError | ConnectionError | TimeoutError
    return isinstance(exc, network) or str(exc).startswith("URL fetch failure")


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded datasets: $KERAS_HOME/datasets or ~/.keras/datasets."""
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(home) / "datasets"


# --- checks ----------------------------------------------------------------------------------


def check_finite(array: np.ndarray, where: str) -> None:
    """DataError naming ``where`` when a float array holds NaN or Inf."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise DataError(f"{where}: contains {bad} NaN or infinite value(s)")


def describe(array: Any) -> str:
    """Short shape/dtype text for error messages."""
    return f"shape {tuple(np.shape(array))}, dtype {np.asarray(array).dtype}"

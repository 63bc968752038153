"""Data layer: every source's shapes, splits, scaling and determinism; manifest checks; errors."""

from __future__ import annotations

import gzip
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from deepfit.data import (
    DataError,
    DatasetConfig,
    dataset_kind_and_task,
    load_prepared,
    prepare_dataset,
)
from deepfit.data import prepare as prepare_module
from deepfit.data.io import sha256_file
from helpers import ROOT

ADAPTER: TypeAdapter[DatasetConfig] = TypeAdapter(DatasetConfig)
SEED = 2024


def config(**body) -> DatasetConfig:
    return ADAPTER.validate_python(body)


@pytest.fixture(scope="module")
def real_datasets() -> dict[str, DatasetConfig]:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["datasets"]
    return {name: ADAPTER.validate_python(body) for name, body in raw.items()}


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "raw"
    path.mkdir(parents=True)
    return path


def prepare(tmp_path: Path, cfg: DatasetConfig, seed: int = SEED, name: str = "ds", **kw):
    out = kw.pop("out", tmp_path / "data" / "prepared" / name)
    raw = kw.pop("raw", tmp_path / "data" / "raw")
    manifest = prepare_dataset(name, cfg, seed=seed, out_dir=out, raw_dir=raw)
    return manifest, load_prepared(out), out


def shas(manifest: dict) -> dict[str, str]:
    return {split: info["sha256"] for split, info in manifest["splits"].items()}


def one_line_error(exc_info: pytest.ExceptionInfo) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# --- config ----------------------------------------------------------------------------------


def test_real_params_datasets_validate_and_answer_kind_statically(real_datasets):
    assert dataset_kind_and_task(real_datasets["digits"]) == ("image", "classification")
    assert dataset_kind_and_task(real_datasets["sunspots"]) == ("sequence", "regression")
    assert dataset_kind_and_task(real_datasets["adding"]) == ("sequence", "regression")
    csv = config(source="csv", path="t.csv", target="y", task="regression")
    npz = config(source="npz", path="a.npz", task="classification", kind="sequence")
    keras_cfg = config(source="keras", name="mnist")
    assert dataset_kind_and_task(csv) == ("vector", "regression")
    assert dataset_kind_and_task(npz) == ("sequence", "classification")
    assert dataset_kind_and_task(keras_cfg) == ("image", "classification")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"source": "digits", "val_fraction": 0.45, "test_fraction": 0.4}, "val_fraction + test"),
        ({"source": "digits", "test_fraction": 0.5}, "test_fraction"),
        ({"source": "digits", "colour": 1}, "colour"),
        ({"source": "sunspots", "window": 0}, "window"),
        ({"source": "adding", "length": 1}, "length"),
        ({"source": "adding", "length": "50"}, "length"),
        ({"source": "keras", "name": "imagenet"}, "name"),
        ({"source": "csv", "path": "/etc/passwd", "target": "y", "task": "regression"}, "path"),
        ({"source": "csv", "path": "../x.csv", "target": "y", "task": "regression"}, "path"),
        ({"source": "npz", "path": "a.npz", "task": "regression", "kind": "graph"}, "kind"),
        ({"source": "parquet"}, "source"),
    ],
)
def test_bad_configs_are_rejected_naming_the_key(body, needle):
    with pytest.raises(ValidationError) as caught:
        ADAPTER.validate_python(body)
    assert needle in str(caught.value)


# --- digits ----------------------------------------------------------------------------------


def test_digits_shapes_scaling_and_stratification(tmp_path, real_datasets):
    manifest, data, _ = prepare(tmp_path, real_datasets["digits"])
    assert data.spec.input_shape == (8, 8, 1)
    assert (data.spec.kind, data.spec.task, data.spec.n_outputs) == ("image", "classification", 10)
    assert manifest["class_names"] == [str(d) for d in range(10)]
    splits = {"train": data.train, "val": data.val, "test": data.test}
    assert sum(len(y) for _, y in splits.values()) == 1797
    for x, y in splits.values():
        assert x.dtype == np.float32 and y.dtype == np.int64 and y.ndim == 1
    # scale fitted on train only: its max is exactly 1 (raw max 16)
    assert data.train[0].max() == 1.0 and data.train[0].min() == 0.0
    assert manifest["feature_scale"] == {"method": "divide_by_train_max", "max": 16.0}
    overall = np.bincount(np.concatenate([y for _, y in splits.values()]), minlength=10) / 1797
    for _, y in splits.values():
        share = np.bincount(y, minlength=10) / len(y)
        assert np.abs(share - overall).max() < 1.5 / len(y) + 1e-9  # stratified: within a sample


def test_digits_is_deterministic_and_seed_dependent(tmp_path, real_datasets):
    cfg = real_datasets["digits"]
    first, _, out1 = prepare(tmp_path, cfg, name="a")
    second, _, out2 = prepare(tmp_path, cfg, name="b")
    assert shas(first) == shas(second)
    for split in ("train", "val", "test"):
        assert (out1 / f"{split}.npz").read_bytes() == (out2 / f"{split}.npz").read_bytes()
    other, _, _ = prepare(tmp_path, cfg, seed=SEED + 1, name="c")
    assert all(shas(other)[s] != shas(first)[s] for s in ("train", "val", "test"))


# --- sunspots --------------------------------------------------------------------------------


def test_sunspots_time_split_and_train_only_scaling(tmp_path, real_datasets):
    cfg = real_datasets["sunspots"]
    manifest, data, _ = prepare(tmp_path, cfg)
    window = cfg.window
    years = {s: data.extras[s]["years"] for s in ("train", "val", "test")}
    assert list(years["test"]) == list(range(2008 - cfg.test_size + 1, 2009))
    assert years["val"][-1] + 1 == years["test"][0] and len(years["val"]) == cfg.val_size
    assert years["train"][0] == 1700 + window and years["train"][-1] + 1 == years["val"][0]
    everything = np.concatenate(list(years.values()))
    assert np.all(np.diff(everything) == 1)  # time order, no overlap, no gap
    x, y = data.train
    assert x.shape == (len(years["train"]), window, 1) and y.shape == (len(x), 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert data.spec == type(data.spec)((window, 1), "sequence", "regression", 1)
    # standardised with the train targets' statistics only
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1) < 1e-5
    assert abs(float(data.test[1].mean())) > 0.01
    # one-step-ahead: each window ends with the previous sample's target
    assert np.array_equal(x[1:, -1, 0], y[:-1, 0])
    assert np.array_equal(data.val[0][0, -1], data.train[1][-1])
    from statsmodels.datasets import sunspots

    frame = sunspots.load_pandas().data
    raw = frame.set_index("YEAR")["SUNACTIVITY"]
    mean, std = manifest["target_scale"]["mean"], manifest["target_scale"]["std"]
    train_raw = raw.loc[float(years["train"][0]) : float(years["train"][-1])].to_numpy()
    assert mean == pytest.approx(train_raw.mean()) and std == pytest.approx(train_raw.std())
    restored = data.test[1][:, 0] * std + mean
    np.testing.assert_allclose(restored, raw.loc[[float(t) for t in years["test"]]], atol=1e-3)


def test_sunspots_too_many_held_out_years_is_an_error(tmp_path):
    cfg = config(source="sunspots", window=150, val_size=100, test_size=100)
    with pytest.raises(DataError, match="training samples") as caught:
        prepare(tmp_path, cfg)
    assert "datasets.ds" in one_line_error(caught)


# --- adding ----------------------------------------------------------------------------------


def test_adding_invariants_and_constant_baseline(tmp_path):
    cfg = config(source="adding", length=10, train_size=60000, val_size=5, test_size=7)
    manifest, data, _ = prepare(tmp_path, cfg)
    x, y = data.train
    assert x.shape == (60000, 10, 2) and y.shape == (60000, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert len(data.val[0]) == 5 and len(data.test[0]) == 7
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0.0 and values.max() < 1.0
    assert set(np.unique(markers)) == {0.0, 1.0}
    assert np.all(markers[:, :5].sum(axis=1) == 1) and np.all(markers[:, 5:].sum(axis=1) == 1)
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(axis=1), rtol=1e-6)
    mse_of_one = float(np.mean((y - 1.0) ** 2))
    assert mse_of_one == pytest.approx(1 / 6, abs=0.005)  # Var(U+U) = 2/12
    assert manifest["target_scale"] == {"mean": 0.0, "std": 1.0}  # not scaled


def test_adding_is_deterministic_per_seed(tmp_path):
    cfg = config(source="adding", length=6, train_size=50, val_size=10, test_size=10)
    first, _, _ = prepare(tmp_path, cfg, name="a")
    again, _, _ = prepare(tmp_path, cfg, name="b")
    other, _, _ = prepare(tmp_path, cfg, seed=SEED + 1, name="c")
    assert shas(first) == shas(again)
    assert all(shas(other)[s] != shas(first)[s] for s in ("train", "val", "test"))
    # the test set does not move when only the training set grows
    bigger, _, _ = prepare(tmp_path, cfg.model_copy(update={"train_size": 80}), name="d")
    assert shas(bigger)["test"] == shas(first)["test"]


def test_odd_length_two_puts_one_marker_in_each_half(tmp_path):
    for length in (2, 7):
        cfg = config(source="adding", length=length, train_size=500, val_size=1, test_size=1)
        _, data, _ = prepare(tmp_path, cfg, name=f"len{length}")
        markers = data.train[0][..., 1]
        half = length // 2
        assert np.all(markers[:, :half].sum(1) == 1) and np.all(markers[:, half:].sum(1) == 1)


# --- manifest verification and atomic output -------------------------------------------------


def small_adding() -> DatasetConfig:
    return config(source="adding", length=4, train_size=30, val_size=5, test_size=5)


def test_load_detects_a_corrupted_byte(tmp_path):
    _, _, out = prepare(tmp_path, small_adding())
    target = out / "val.npz"
    blob = bytearray(target.read_bytes())
    blob[-10] ^= 0xFF
    target.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="sha256") as caught:
        load_prepared(out)
    assert "val.npz" in one_line_error(caught)


def test_load_detects_missing_files(tmp_path):
    _, _, out = prepare(tmp_path, small_adding())
    (out / "test.npz").unlink()
    with pytest.raises(DataError, match=r"test\.npz") as caught:
        load_prepared(out)
    one_line_error(caught)
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"manifest\.json"):
        load_prepared(out)


def test_manifest_records_shapes_dtypes_counts_and_hashes(tmp_path):
    manifest, _, out = prepare(tmp_path, small_adding())
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["dataset"] == "ds" and manifest["source"] == "adding"
    assert manifest["config"]["length"] == 4 and manifest["seed"] == SEED
    train = manifest["splits"]["train"]
    assert train["samples"] == 30 and train["sha256"] == sha256_file(out / "train.npz")
    assert train["arrays"]["x"] == {"shape": [30, 4, 2], "dtype": "float32"}
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "test.npz",
        "train.npz",
        "val.npz",
    ]


def test_failed_prepare_leaves_previous_output_and_no_temp_dir(tmp_path, monkeypatch):
    _, _, out = prepare(tmp_path, small_adding())
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(prepare_module, "write_json", broken)
    bigger = small_adding().model_copy(update={"train_size": 40})
    with pytest.raises(OSError, match="disk full"):
        prepare(tmp_path, bigger)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["ds"]


def test_never_writes_under_raw(tmp_path, raw_dir):
    with pytest.raises(DataError, match="user files"):
        prepare(tmp_path, small_adding(), out=raw_dir / "prepared", raw=raw_dir)
    with pytest.raises(DataError, match="user files"):
        prepare(tmp_path, small_adding(), out=raw_dir.parent, raw=raw_dir)
    assert list(raw_dir.iterdir()) == []


# --- csv -------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[list[object]]) -> None:
    path.write_text("\n".join(",".join(str(c) for c in row) for row in rows) + "\n")


def test_csv_classification(tmp_path, raw_dir):
    rng = np.random.default_rng(0)
    header = [["a", "b", "note", "label"]]
    labels = ["versicolor", "setosa", "virginica"]
    rows = [[rng.normal(5, 2), i % 7, "x", labels[i % 3]] for i in range(90)]
    write_csv(raw_dir / "flowers.csv", header + rows)
    cfg = config(
        source="csv", path="flowers.csv", target="label", task="classification", drop=["note"]
    )
    manifest, data, _ = prepare(tmp_path, cfg)
    assert manifest["class_names"] == ["setosa", "versicolor", "virginica"]
    assert data.spec == type(data.spec)((2,), "vector", "classification", 3)
    assert data.train[1].dtype == np.int64 and data.train[0].dtype == np.float32
    assert manifest["feature_scale"]["features"] == ["a", "b"]  # dropped with `drop`
    np.testing.assert_allclose(data.train[0].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(data.train[0].std(axis=0), 1, atol=1e-5)
    assert np.bincount(data.test[1]).tolist() == [6, 6, 6]  # stratified


def test_csv_regression_and_numeric_labels(tmp_path, raw_dir):
    rows = [["x1", "x2", "y"]] + [[i, i % 3, 2.5 * i + 1] for i in range(40)]
    write_csv(raw_dir / "lin.csv", rows)
    cfg = config(source="csv", path="lin.csv", target="y", task="regression")
    manifest, data, _ = prepare(tmp_path, cfg)
    assert data.train[1].shape == (len(data.train[0]), 1) and data.spec.n_outputs == 1
    scale = manifest["target_scale"]
    assert abs(float(data.train[1].mean())) < 1e-6 and scale["std"] > 1
    assert manifest["class_names"] is None
    # numeric class labels sort as numbers
    rows = [["f", "k"]] + [[i, [2, 10, 1][i % 3]] for i in range(60)]
    write_csv(raw_dir / "num.csv", rows)
    cfg = config(source="csv", path="num.csv", target="k", task="classification")
    manifest, _, _ = prepare(tmp_path, cfg, name="num")
    assert manifest["class_names"] == ["1", "2", "10"]


@pytest.mark.parametrize(
    ("cells", "needle"),
    [
        ("nan", "column 'a' mixes numbers and text: line 6 (data row 5) holds 'nan'"),
        ("inf", "line 6 (data row 5), column 'a': inf is not a finite number"),
        (
            "",
            "line 6 (data row 5), column 'a': empty cell "
            "(fill it, or set datasets.ds.missing: impute)",
        ),
        ("abc", "column 'a' mixes numbers and text: line 6 (data row 5) holds 'abc'"),
    ],
)
def test_csv_bad_values_are_errors_naming_the_file(tmp_path, raw_dir, cells, needle):
    rows = [["a", "y"]] + [[i, i] for i in range(30)]
    rows[5][0] = cells
    write_csv(raw_dir / "bad.csv", rows)
    cfg = config(source="csv", path="bad.csv", target="y", task="regression")
    with pytest.raises(DataError) as caught:
        prepare(tmp_path, cfg)
    assert one_line_error(caught).endswith(f"bad.csv: {needle}")


def test_csv_too_small_and_missing_target(tmp_path, raw_dir):
    write_csv(raw_dir / "tiny.csv", [["a", "y"], [1, 2], [2, 3]])
    cfg = config(source="csv", path="tiny.csv", target="y", task="regression")
    with pytest.raises(DataError, match=r"cannot split|empty") as caught:
        prepare(tmp_path, cfg)
    one_line_error(caught)
    cfg = config(source="csv", path="tiny.csv", target="z", task="regression")
    with pytest.raises(DataError, match=r"datasets\.ds\.target: no column 'z'"):
        prepare(tmp_path, cfg)


def test_user_file_path_errors(tmp_path, raw_dir):
    cfg = config(source="csv", path="nothere.csv", target="y", task="regression")
    with pytest.raises(DataError, match=r"datasets\.ds\.path: .*nothere\.csv not found") as caught:
        prepare(tmp_path, cfg)
    one_line_error(caught)
    # configs built without validation still cannot escape data/raw/
    (tmp_path / "secret.csv").write_text("a,y\n1,2\n")
    for path in ("../../secret.csv", str(tmp_path / "secret.csv")):
        sneaky = cfg.model_copy(update={"path": path})
        with pytest.raises(DataError, match=r"datasets\.ds\.path: must"):
            prepare(tmp_path, sneaky)


# --- npz -------------------------------------------------------------------------------------


def test_npz_image_classification_adds_channel(tmp_path, raw_dir):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(60, 5, 4), dtype=np.uint8)
    np.savez(raw_dir / "imgs.npz", x=x, y=np.arange(60) % 2)
    cfg = config(source="npz", path="imgs.npz", task="classification", kind="image")
    manifest, data, _ = prepare(tmp_path, cfg)
    assert data.spec == type(data.spec)((5, 4, 1), "image", "classification", 2)
    assert data.train[0].max() == 1.0 and manifest["class_names"] == ["0", "1"]


def test_npz_sequence_regression_and_vector(tmp_path, raw_dir):
    rng = np.random.default_rng(2)
    np.savez(raw_dir / "seq.npz", x=rng.normal(size=(50, 6)), y=rng.normal(size=(50, 2)))
    cfg = config(source="npz", path="seq.npz", task="regression", kind="sequence")
    _, data, _ = prepare(tmp_path, cfg, name="seq")
    assert data.spec == type(data.spec)((6, 1), "sequence", "regression", 2)
    cfg = config(source="npz", path="seq.npz", task="regression", kind="vector")
    _, data, _ = prepare(tmp_path, cfg, name="vec")
    assert data.spec.input_shape == (6,) and data.val[1].shape[1] == 2


@pytest.mark.parametrize(
    ("x", "y", "kind", "needle"),
    [
        (np.zeros((20, 3, 3)), np.zeros(20), "vector", "kind 'vector' needs"),
        (np.zeros((20, 3)), np.zeros(19), "vector", "x has 20 samples but y has 19"),
        (np.full((20, 3), np.nan), np.zeros(20), "vector", "NaN"),
        (np.zeros((20, 3)), np.r_[np.zeros(19), np.inf], "vector", "NaN or infinite"),
    ],
)
def test_npz_bad_arrays_are_errors_naming_the_file(tmp_path, raw_dir, x, y, kind, needle):
    np.savez(raw_dir / "bad.npz", x=x, y=y)
    cfg = config(source="npz", path="bad.npz", task="regression", kind=kind)
    with pytest.raises(DataError, match=needle) as caught:
        prepare(tmp_path, cfg)
    assert "bad.npz" in one_line_error(caught)


def test_npz_without_x_and_y(tmp_path, raw_dir):
    np.savez(raw_dir / "odd.npz", features=np.zeros((10, 2)))
    cfg = config(source="npz", path="odd.npz", task="regression", kind="vector")
    with pytest.raises(DataError, match=r"odd\.npz: needs arrays 'x' and 'y'; found: features"):
        prepare(tmp_path, cfg)


# --- keras.datasets (fake files in a temporary Keras cache; the network is blocked) ----------


@pytest.fixture
def keras_cache(tmp_path, monkeypatch):
    """A temporary Keras home whose downloads fail, recording every attempted URL."""
    pytest.importorskip("keras")
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    home = tmp_path / "keras_home"
    (home / "datasets").mkdir(parents=True)
    # Keras reads KERAS_HOME once at import; keras_home() returns this module global.
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))
    monkeypatch.setenv("KERAS_HOME", str(home))
    attempts: list[str] = []

    def offline(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    return home / "datasets", attempts


def write_idx(path: Path, array: np.ndarray) -> None:
    header = 16 if array.ndim == 3 else 8  # images: magic, count, rows, cols; labels: magic, count
    with gzip.open(path, "wb") as handle:
        handle.write(b"\0" * header + array.astype(np.uint8).tobytes())


def test_keras_fashion_mnist_through_the_real_loader(tmp_path, keras_cache):
    cache, attempts = keras_cache
    folder = cache / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for prefix, n in (("train", 200), ("t10k", 50)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    cfg = config(source="keras", name="fashion_mnist", val_fraction=0.2, limit=100)
    manifest, data, _ = prepare(tmp_path, cfg)
    assert attempts == []  # read from the cache, no download tried
    assert (len(data.train[1]), len(data.val[1]), len(data.test[1])) == (80, 20, 50)
    assert data.spec == type(data.spec)((28, 28, 1), "image", "classification", 10)
    x_train = data.train[0]
    assert x_train.dtype == np.float32 and 0 <= x_train.min() <= x_train.max() <= 1
    assert np.bincount(data.train[1]).tolist() == [8] * 10  # limit keeps the classes balanced
    assert manifest["class_names"][0] == "T-shirt/top"


def test_keras_mnist_reads_the_cached_npz_when_its_hash_checks(tmp_path, keras_cache, monkeypatch):
    # Keras checks mnist.npz against the sha256 of the official file, which a small fake cannot
    # match; only that comparison is stubbed, the real get_file and load_data run.
    from keras.src.utils import file_utils

    cache, attempts = keras_cache
    monkeypatch.setattr(file_utils, "validate_file", lambda *a, **k: True)
    rng = np.random.default_rng(4)
    np.savez(
        cache / "mnist.npz",
        x_train=rng.integers(0, 256, (120, 28, 28), dtype=np.uint8),
        y_train=(np.arange(120) % 10).astype(np.uint8),
        x_test=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        y_test=(np.arange(30) % 10).astype(np.uint8),
    )
    cfg = config(source="keras", name="mnist", val_fraction=0.25)
    first, data, _ = prepare(tmp_path, cfg, name="a")
    again, _, _ = prepare(tmp_path, cfg, name="b")
    assert attempts == []
    assert (len(data.train[1]), len(data.val[1]), len(data.test[1])) == (90, 30, 30)
    assert data.spec.input_shape == (28, 28, 1) and first["class_names"] == list("0123456789")
    assert shas(first) == shas(again)


def test_keras_offline_without_cache_is_a_one_line_error(tmp_path, keras_cache):
    cache, attempts = keras_cache
    # a fake mnist.npz fails Keras' hash check, so Keras tries to download a fresh copy
    np.savez(cache / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    cfg = config(source="keras", name="mnist")
    with pytest.raises(DataError) as caught:
        prepare(tmp_path, cfg)
    message = one_line_error(caught)
    assert message.startswith("datasets.ds.name: keras dataset 'mnist' is not in the Keras cache")
    assert str(cache) in message and "offline" in message
    assert len(attempts) == 1 and attempts[0].endswith("mnist.npz")
    assert not (tmp_path / "data" / "prepared" / "ds").exists()
    # Keras deletes the file that failed its check; with nothing cached the error is the same
    assert not (cache / "mnist.npz").exists()
    with pytest.raises(DataError, match="not in the Keras cache"):
        prepare(tmp_path, cfg)
    assert len(attempts) == 2


def test_keras_cifar10_arrays_are_converted(tmp_path, monkeypatch):
    # The real cifar10 loader needs the official 160 MB archive (hash-checked, fixed 50000
    # training images), so this covers only the conversion of arrays in its documented format.
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(5)
    fake = (
        (rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8), (np.arange(100) % 10)[:, None]),
        (rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), (np.arange(20) % 10)[:, None]),
    )
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: fake)
    cfg = config(source="keras", name="cifar10", val_fraction=0.1)
    manifest, data, _ = prepare(tmp_path, cfg)
    assert data.spec.input_shape == (32, 32, 3) and data.train[1].ndim == 1
    assert manifest["class_names"][-1] == "truck" and len(data.test[1]) == 20


def test_keras_unreadable_cached_file_is_not_blamed_on_the_network(tmp_path, keras_cache):
    cache, attempts = keras_cache
    folder = cache / "fashion-mnist"
    folder.mkdir()
    for prefix in ("train", "t10k"):
        for part in ("images-idx3", "labels-idx1"):
            (folder / f"{prefix}-{part}-ubyte.gz").write_bytes(b"not gzip")
    cfg = config(source="keras", name="fashion_mnist")
    with pytest.raises(DataError, match="could not be read from the Keras cache") as caught:
        prepare(tmp_path, cfg)
    assert "offline" not in one_line_error(caught) and attempts == []

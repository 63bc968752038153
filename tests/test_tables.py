"""Tables (`source: csv`): column kinds, columns/drop, missing values, preprocessing fitted on
train, bad input through the real prepare stage, table baselines, and a logged MLflow model that
takes raw CSV rows (prepare -> train -> evaluate, then ``mlflow.pyfunc.load_model``).

The logged-model test reads the shared pipeline's `tab` run (conftest's `pipeline`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from deepfit.data import DataError, DatasetConfig, load_prepared, prepare_dataset, tables
from deepfit.evaluate import baselines
from helpers import CITIES, make_workdir, mixed_frame, prepare_refuses

ROOT = Path(__file__).resolve().parents[1]
ADAPTER: TypeAdapter[DatasetConfig] = TypeAdapter(DatasetConfig)


def config(**body: Any) -> DatasetConfig:
    return ADAPTER.validate_python({"source": "csv", "path": "t.csv", **body})


def write(raw_dir: Path, frame: pd.DataFrame, name: str = "t.csv") -> Path:
    path = raw_dir / name
    frame.to_csv(path, index=False)
    return path


def prepare(tmp_path: Path, cfg: DatasetConfig) -> tuple[dict, Any]:
    out = tmp_path / "data" / "prepared" / "t"
    manifest = prepare_dataset("t", cfg, seed=3, out_dir=out, raw_dir=tmp_path / "data" / "raw")
    return manifest, load_prepared(out)


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "raw"
    path.mkdir(parents=True)
    return path


# --- reading and encoding --------------------------------------------------------------------


def test_mixed_columns_impute_fitted_on_train(tmp_path, raw_dir):
    frame = mixed_frame()
    frame.loc[[3, 40], "income"] = np.nan
    frame.loc[7, "city"] = np.nan
    write(raw_dir, frame)
    cfg = config(target="label", task="classification", missing="impute")
    manifest, data = prepare(tmp_path, cfg)
    table = manifest["table"]
    kinds = {c["name"]: (c["kind"], c["dtype"]) for c in table["columns"]}
    assert kinds == {
        "age": ("numeric", "int64"),
        "income": ("numeric", "float64"),
        "city": ("categorical", "str"),
        "member": ("boolean", "bool"),
    }
    train = frame.iloc[data.extras["train"]["row"]]
    income = table["columns"][1]
    assert income["fill"] == pytest.approx(float(train["income"].median()))  # train rows only
    city = table["columns"][2]
    in_train = train["city"].isna().any()
    assert city["vocabulary"] == sorted(CITIES + ([tables.MISSING] if in_train else []))
    assert table["encoded"][:3] == ["age", "income", "city=(unseen)"]
    assert data.spec.input_shape == (len(table["encoded"]),)
    np.testing.assert_allclose(data.train[0][:, 0].mean(), 0, atol=1e-6)  # standardised
    onehot = data.train[0][:, 2 : 3 + len(CITIES) + in_train]
    assert (onehot.sum(axis=1) == 1).all()
    assert np.isfinite(data.test[0]).all()
    assert sorted(np.concatenate([data.extras[s]["row"] for s in ("train", "val", "test")])) == (
        list(range(len(frame)))
    )


def test_unseen_category_gets_the_oov_slot():
    train = pd.DataFrame({"c": ["a", "b", "a"], "n": [1.0, 2.0, 3.0]})
    cfg = config(target="y", task="regression")
    kinds = {"c": "categorical", "n": "numeric"}
    table = tables.fit_table(train, kinds, {"c": "str", "n": "float64"}, cfg)
    rows = pd.DataFrame({"c": ["b", "zzz", None], "n": [2.0, np.nan, 1.0]})
    x = tables.encode(rows, table)
    assert x[:, :3].tolist() == [[0, 0, 1], [1, 0, 0], [1, 0, 0]]  # zzz and empty: unseen
    assert x[1, 3] == 0.0  # empty number -> train median 2.0 -> standardised 0


def test_columns_and_drop_choose_features(tmp_path, raw_dir):
    write(raw_dir, mixed_frame())
    cfg = config(target="label", task="classification", columns=["member", "age"])
    manifest, _ = prepare(tmp_path, cfg)
    assert manifest["table"]["encoded"] == ["member", "age"]
    cfg = config(target="label", task="classification", drop=["city", "income"])
    manifest, _ = prepare(tmp_path, cfg)
    assert manifest["table"]["encoded"] == ["age", "member"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"columns": ["age", "height"]}, "datasets.t.columns: no column 'height' in {file}; "),
        ({"drop": ["Age"]}, "datasets.t.drop: no column 'Age' in {file}; "),
    ],
)
def test_unknown_columns_are_one_line_errors(tmp_path, raw_dir, body, message):
    file = write(raw_dir, mixed_frame())
    with pytest.raises(DataError) as caught:
        prepare(tmp_path, config(target="label", task="classification", **body))
    columns = "columns: age, income, city, member, label"
    assert str(caught.value) == message.format(file=file) + columns


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"columns": ["a"], "drop": ["b"]}, "give either columns (use only these) or drop"),
        ({"drop": ["label"]}, "drop: must not name the target column 'label'"),
        ({"missing": "mean"}, "Input should be 'error' or 'impute'"),
    ],
)
def test_config_keys_are_strict(body, needle):
    with pytest.raises(ValidationError) as caught:
        config(target="label", task="classification", **body)
    assert needle in str(caught.value)


def test_raw_input_model_matches_encoded_rows():
    import keras

    frame = mixed_frame(40)
    cfg = config(target="income", task="regression")
    kinds = {"age": "numeric", "city": "categorical", "member": "boolean"}
    table = tables.fit_table(frame, kinds, {n: str(frame[n].dtype) for n in kinds}, cfg)
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((len(table["encoded"]),)), keras.layers.Dense(1)])
    scale = {"mean": 50.0, "std": 10.0}
    model = tables.raw_input_model(net, table, scale, "regression")
    rows = frame.head(6).copy()
    rows.loc[rows.index[0], "city"] = "tokyo"  # unseen: the OOV slot, no error
    expected = net.predict(tables.encode(rows, table), verbose=0) * 10.0 + 50.0
    inputs = {
        tables.input_key(i): _column(rows[c["name"]], c) for i, c in enumerate(table["columns"])
    }
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, rtol=1e-5, atol=1e-4)


def _column(cells: pd.Series, column: dict) -> Any:
    import tensorflow as tf

    if column["kind"] == "categorical":
        return tf.constant(cells.astype(str).to_numpy(object)[:, None])
    return cells.to_numpy(np.float32)[:, None]


def test_table_baselines_tune_on_validation():
    """A table's baselines are the usual families on the encoded rows: trees beat a linear
    model on an interaction, ridge finds a linear target."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y_class = (x[:, 0] * x[:, 1] > 0).astype(int)  # not linear: the trees should win
    splits = [(x[i::3], y_class[i::3]) for i in range(3)]
    logreg = baselines.logreg(*splits, {"C": [0.1, 1.0, 10.0]}, seed=0)
    trees = baselines.gbt(*splits, {"max_leaf_nodes": [15, 31]}, seed=0)
    assert trees["accuracy"] > logreg["accuracy"] + 0.2
    y_reg = 3 * x[:, 0] + 1
    reg = [(x[i::3], y_reg[i::3]) for i in range(3)]
    ridge = baselines.linear(*reg, grid={"alpha": [0.1, 10.0]})
    assert ridge["mse"] < 0.01 and ridge["params"] == {"alpha": 0.1}
    boosted = baselines.gbt_regression(*reg, grid={"max_leaf_nodes": [15]})
    assert set(boosted) >= {"mse", "rmse", "mae", "val_mse", "params"}


# --- the real stages -------------------------------------------------------------------------


def tiny_params(dataset: dict[str, Any], epochs: int = 2) -> dict[str, Any]:
    """The real params.yaml with one CSV dataset ``t`` and one tiny FNN run ``tab`` on it."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["epochs"] = epochs
    raw["datasets"] = {"digits": raw["datasets"]["digits"], "t": {"source": "csv", **dataset}}
    raw["runs"] = {"tab": {"model": "fnn", "dataset": "t", "units": [8], "dropout": 0.0}}
    raw["tuning"] = {}  # its base run is gone
    raw["studies"] = {k: v for k, v in raw["studies"].items() if v["base"]["dataset"] == "digits"}
    return raw


BASE = {"path": "t.csv", "target": "label", "task": "classification"}
NOT_UTF8 = b"age,label\n1,a\n\xe9,b\n"  # the bad byte at offset 14, on line 3


def _drop_target(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="label")


def _one_label(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label="yes")


def _empty_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(notes=np.nan)


def _empty_cell(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[5, "city"] = np.nan  # 6th data row: line 7
    return frame


BAD_INPUT = [
    (
        "target column missing",
        _drop_target,
        "datasets.t.target: no column 'label' in data/raw/t.csv; "
        "columns: age, income, city, member",
    ),
    (
        "target with one value",
        _one_label,
        "datasets.t.target: column 'label' of data/raw/t.csv has one value ('yes') on every row; "
        "a target needs at least 2 distinct values",
    ),
    (
        "not UTF-8",
        NOT_UTF8,
        "data/raw/t.csv: not UTF-8: byte 0xe9 at offset 14 (line 3); save the file as UTF-8",
    ),
    (
        "a column all empty",
        _empty_column,
        "data/raw/t.csv: column 'notes' is empty on every row; "
        "fill it or leave it out (datasets.t.drop)",
    ),
    (
        "an empty cell with missing: error",
        _empty_cell,
        "data/raw/t.csv: line 7 (data row 6), column 'city': empty cell "
        "(fill it, or set datasets.t.missing: impute)",
    ),
]


@pytest.mark.parametrize(("case", "change", "message"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_tables_stop_prepare_in_one_line(tmp_path, monkeypatch, capsys, case, change, message):
    root = make_workdir(tmp_path / "work", tiny_params(BASE))
    if isinstance(change, bytes):
        (root / "data" / "raw" / "t.csv").write_bytes(change)
    else:
        write(root / "data" / "raw", change(mixed_frame()))
    error = prepare_refuses(root, "t", monkeypatch, capsys)
    assert error == f"deepfit prepare@t: error: {message}"


@pytest.mark.slow
def test_logged_model_takes_raw_rows(pipeline):
    """The shared pipeline's `tab` run (prepare -> train -> evaluate on a mixed CSV with an empty
    cell, imputed): its MLflow model on raw pandas rows."""
    import mlflow

    root, _ = pipeline
    data = load_prepared(root / "data" / "prepared" / "t")
    run_id = json.loads((root / "models" / "tab" / "run.json").read_text())["mlflow_run_id"]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")

    rows = pd.read_csv(root / "data" / "raw" / "t.csv")
    assert rows["income"].isna().sum() == 1  # the empty cell that prepare imputed
    test_rows = rows.iloc[data.extras["test"]["row"]].drop(columns="label")
    proba = model.predict(test_rows)
    assert list(proba.columns) == data.manifest["class_names"] == ["no", "yes"]
    predicted = proba.to_numpy().argmax(axis=1)
    eval_rows = pd.read_csv(root / "reports" / "plots" / "tab" / "eval" / "confusion.csv")
    assert proba.columns[predicted].tolist() == eval_rows["predicted"].tolist()
    metrics = json.loads((root / "reports" / "metrics" / "tab.json").read_text())
    accuracy = float(np.mean(predicted == data.test[1]))
    assert accuracy == pytest.approx(metrics["test"]["accuracy"])
    evidence = json.loads((root / "reports" / "evidence" / "tab.json").read_text())
    assert set(evidence["baselines"]) == {"logreg", "svm", "knn", "gbt"}

    unseen = test_rows.head(3).copy()
    unseen["city"] = ["tokyo", None, "rome"]
    out = model.predict(unseen).to_numpy()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    network = _network(root)
    expected = network.predict(tables.encode(unseen, data.manifest["table"]), verbose=0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def _network(root: Path) -> Any:
    from deepfit.models import load_model

    return load_model(root / "models" / "tab" / "model.keras", "fnn")

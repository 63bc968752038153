"""Serving: `deepfit promote` registers deepfit-<run>@champion, and the real `mlflow models serve`
answers raw inputs as in the user's files (digits pixel values, CSV rows with an unseen category,
uint8 RGB pixels) with the predictions that evaluation scored.

A copy of the shared pipeline (conftest's `pipeline`) is promoted; three of its runs are served
(fnn on digits, tab on the CSV table, pix on the PNG folder), their model servers started together
on free loopback ports and stopped by process group. A fast test checks the raw-input front of the
logged model (prepare's scaling as a layer) alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import ROOT, copy_pipeline, free_port, stage_env, tool

RUNS = ("fnn", "tab", "pix")
STARTUP_SECONDS = 120  # `mlflow models serve` imports TensorFlow before /ping answers


def _env(root: Path) -> dict[str, str]:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return stage_env(PYTHONPATH=str(ROOT / "src"), MLFLOW_TRACKING_URI=uri)


UNITS = {"mean": 44.9, "std": 34.4}  # a regression target's scale, as prepare stores it


@pytest.mark.parametrize(
    ("scale", "target"),
    [
        ({"method": "divide_by_train_max", "max": 16.0}, None),
        ({"method": "divide", "value": 255.0}, {"mean": 0.0, "std": 1.0}),
        ({"method": "standardize", "mean": [1.0, -2.0, 0.5], "std": [2.0, 0.5, 1.0]}, None),
        ({"method": "standardize", "mean": [1.0, -2.0, 0.5], "std": [2.0, 0.5, 1.0]}, UNITS),
        ({"method": "target_scale"}, UNITS),
        ({"method": "none"}, UNITS),
    ],
    ids=["digits", "keras", "npz", "npz-regression", "series", "raw-regression"],
)
def test_logged_model_takes_the_values_prepare_scaled(scale: dict, target: dict | None) -> None:
    """Raw values in (prepare's scaling a layer in front), regression targets out in their own
    units (the scaling of the targets undone behind the network)."""
    import keras

    from deepfit.train.run import raw_input_model, raw_values

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(3,))
    network = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    prepared = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    raw = raw_values(prepared, scale, target)
    assert np.allclose(raw, prepared) == (scale["method"] == "none")
    served = raw_input_model(network, scale, target).predict(raw, verbose=0)
    expected = network.predict(prepared, verbose=0)
    if target is not None:
        expected = expected * target["std"] + target["mean"]
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    assert raw_input_model(network, {"method": "rescale_in_model", "scale": 1 / 255}) is network
    assert raw_input_model(network, {"method": "none"}, {"mean": 0.0, "std": 1.0}) is network


def test_promote_help_loads_no_mlflow_or_tensorflow() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from deepfit.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['promote', '--help'])\n"
        "print(sorted(m for m in ('mlflow', 'tensorflow', 'keras', 'pandas') if m in sys.modules))"
    )
    env = stage_env(PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


@pytest.fixture(scope="module")
def root(pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared pipeline whose best run of each name is promoted."""
    root = copy_pipeline(pipeline[0], tmp_path_factory.mktemp("serving") / "repo")
    done = subprocess.run(
        [tool("deepfit"), "promote"], cwd=root, env=_env(root), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def servers(root: Path) -> Iterator[dict[str, str]]:
    """`mlflow models serve` of every champion, started together, stopped by process group."""
    started: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for name in RUNS:
            port = free_port()
            cmd = [tool("mlflow"), "models", "serve", "-m", f"models:/deepfit-{name}@champion"]
            cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
            log = open(root / f"serve-{name}.log", "w")  # noqa: SIM115 (closed with the process)
            process = subprocess.Popen(
                cmd, cwd=root, env=_env(root), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            started[name] = (process, f"http://127.0.0.1:{port}")
        for name, (process, url) in started.items():
            _wait_for_ping(process, url, root / f"serve-{name}.log")
        yield {name: url for name, (_, url) in started.items()}
    finally:
        for process, _ in started.values():
            _stop(process)


def _wait_for_ping(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            urllib.request.urlopen(f"{url}/ping", timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise AssertionError(f"{url}/ping did not answer in {STARTUP_SECONDS} s: {log.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its uvicorn workers
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _post(url: str, body: dict) -> list:
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())["predictions"]


def _scored(root: Path, run: str) -> pd.DataFrame:
    """What evaluation predicted on the test split, row by row."""
    return pd.read_csv(root / "reports" / "plots" / run / "eval" / "confusion.csv")


def _keras_proba(root: Path, run: str, x: np.ndarray) -> np.ndarray:
    import keras

    model = keras.saving.load_model(root / "models" / run / "model.keras")
    return np.asarray(model.predict(x, verbose=0))


# ---------------------------------------------------------------- registry


@pytest.mark.slow
def test_promote_registers_the_champion_with_its_evidence(root: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name in RUNS:
        version = client.get_model_version_by_alias(f"deepfit-{name}", "champion")
        summary = json.loads((root / "models" / name / "run.json").read_text())
        assert version.run_id == summary["mlflow_run_id"], name
        metrics = json.loads((root / "reports" / "metrics" / f"{name}.json").read_text())
        tags = version.tags
        assert tags["deepfit.metric"] == "test.accuracy", name
        assert float(tags["deepfit.metric.value"]) == pytest.approx(metrics["test"]["accuracy"])
        assert tags["deepfit.baseline"] == metrics["baseline"]["name"], name
        assert float(tags["deepfit.baseline.value"]) == pytest.approx(
            metrics["baseline"]["accuracy"]
        )
        assert tags["deepfit.baseline.verdict"] == metrics["baseline"]["verdict"], name
        assert tags["deepfit.fit.verdict"] == metrics["fit"]["verdict"], name
        assert tags["dvc_exp_name"] == "workspace" and tags["git_commit"], name
    again = subprocess.run(
        [tool("deepfit"), "promote", "--run", "fnn"],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and "already champion: deepfit-fnn version 1" in again.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "nope"], "no MLflow run of deepfit run 'nope' in the experiment"),
        (["--run-id", "0" * 32], f"no MLflow run with id {'0' * 32} in the experiment"),
        (["--tracking-uri", "sqlite:////nowhere/mlflow.db"], "no MLflow store at /nowhere"),
    ],
)
def test_promote_errors_are_one_line(root: Path, args: list[str], message: str) -> None:
    done = subprocess.run(
        [tool("deepfit"), "promote", *args],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"deepfit promote: error: {message}"), lines


# ---------------------------------------------------------------- serving raw inputs


@pytest.mark.slow
def test_digits_model_serves_raw_pixel_values(root: Path, servers: dict[str, str]) -> None:
    prepared = np.load(root / "data" / "prepared" / "digits" / "test.npz")["x"]
    manifest = json.loads((root / "data" / "prepared" / "digits" / "manifest.json").read_text())
    raw = np.rint(prepared * manifest["feature_scale"]["max"])  # the 0..16 values of the set
    assert raw.max() == 16 and np.array_equal(raw, raw.astype(int))
    proba = np.asarray(_post(servers["fnn"], {"inputs": raw.tolist()}))
    np.testing.assert_allclose(proba, _keras_proba(root, "fnn", prepared), atol=1e-5)
    assert proba.argmax(axis=1).tolist() == _scored(root, "fnn")["predicted"].tolist()


@pytest.mark.slow
def test_table_model_serves_raw_csv_rows(root: Path, servers: dict[str, str]) -> None:
    from deepfit.data import load_prepared

    data = load_prepared(root / "data" / "prepared" / "t")
    rows = pd.read_csv(root / "data" / "raw" / "t.csv").iloc[data.extras["test"]["row"]]
    features = rows.drop(columns="label")
    split = json.loads(features.to_json(orient="split", index=False))
    answers = pd.DataFrame(_post(servers["tab"], {"dataframe_split": split}))
    assert list(answers.columns) == ["no", "yes"]
    assert answers.idxmax(axis=1).tolist() == _scored(root, "tab")["predicted"].tolist()
    np.testing.assert_allclose(
        answers.to_numpy(), _keras_proba(root, "tab", data.test[0]), rtol=1e-5, atol=1e-6
    )
    unseen = features.head(2).assign(city=["tokyo", "oslo"])  # a city never seen in training
    split = json.loads(unseen.to_json(orient="split", index=False))
    out = pd.DataFrame(_post(servers["tab"], {"dataframe_split": split})).to_numpy()
    assert out.shape == (2, 2) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_image_folder_model_serves_raw_uint8_pixels(root: Path, servers: dict[str, str]) -> None:
    pixels = np.load(root / "data" / "prepared" / "pics" / "test_x.npy")
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (8, 8, 3)  # the PNGs' own pixels
    proba = np.asarray(_post(servers["pix"], {"inputs": pixels.tolist()}))
    np.testing.assert_allclose(proba, _keras_proba(root, "pix", pixels), atol=1e-5)
    manifest = json.loads((root / "data" / "prepared" / "pics" / "manifest.json").read_text())
    names = [manifest["class_names"][i] for i in proba.argmax(axis=1)]
    assert names == _scored(root, "pix")["predicted"].tolist()


@pytest.mark.slow
def test_forecast_model_takes_raw_sunspot_numbers(root: Path) -> None:
    """The logged forecaster reads the yearly numbers as statsmodels gives them and forecasts
    in sunspots: its test RMSE is the one evaluation reported."""
    import mlflow

    from deepfit.data.sources import load_sunspots

    manifest = json.loads((root / "data" / "prepared" / "sunspots" / "manifest.json").read_text())
    window, test_size = manifest["config"]["window"], manifest["config"]["test_size"]
    _, values = load_sunspots()
    windows = np.lib.stride_tricks.sliding_window_view(values, window)[:-1][-test_size:]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    run_id = json.loads((root / "models" / "lstm" / "run.json").read_text())["mlflow_run_id"]
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    forecast = np.asarray(model.predict(windows[..., None].astype(np.float32))).ravel()
    rmse = float(np.sqrt(np.mean((forecast - values[-test_size:]) ** 2)))
    reported = json.loads((root / "reports" / "metrics" / "lstm.json").read_text())["test"]["rmse"]
    assert rmse == pytest.approx(reported, rel=1e-4)

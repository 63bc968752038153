"""End to end with a tracking server: the tiny pipeline logs over HTTP to a real `mlflow server`.

The server runs on 127.0.0.1 with a sqlite backend and proxied artifacts in a temporary folder;
`dvc repro` runs in a temporary copy of the repo with MLFLOW_TRACKING_URI pointing at it. Runs,
epoch rows, figures and the model must be on the server, and nothing in the repository copy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request

import pytest

from helpers import EPOCHS, free_port, sh, stage_env, tiny_repo, tool

pytestmark = pytest.mark.slow

SERVER_START_TIMEOUT = 120  # seconds; the first start creates the store's tables


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """(url, folder) of a fresh `mlflow server`; stopped, with its workers, after the module."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = stage_env()
    cmd = [
        tool("mlflow"),
        *("server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        *("--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"),
        *("--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts"),
    ]
    log = (folder / "server.log").open("w")
    # its own process group: the server forks uvicorn workers, all stopped together below
    process = subprocess.Popen(
        cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(folder / 'server.log').read_text()}")
            time.sleep(1)
        yield url, folder
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


@pytest.fixture(scope="module")
def pipeline(server, tmp_path_factory: pytest.TempPathFactory):
    url, _ = server
    root = tmp_path_factory.mktemp("served") / "repo"
    env = tiny_repo(root, ["fnn"], env_extra={"MLFLOW_TRACKING_URI": url})
    return root, env


@pytest.fixture(scope="module")
def client(server):
    from mlflow.tracking import MlflowClient

    url, _ = server
    return MlflowClient(tracking_uri=url)


def _fnn_run(client):
    experiment = client.get_experiment_by_name("deepfit")
    assert experiment is not None, "the pipeline did not create experiment 'deepfit' on the server"
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in runs] == ["fnn"]
    return experiment, runs[0]


def test_runs_and_epoch_rows_are_on_the_server(pipeline, client):
    root, _ = pipeline
    experiment, run = _fnn_run(client)
    assert run.info.status == "FINISHED"
    assert run.data.tags["deepfit.run"] == "fnn"
    assert run.data.params["arch.activation"] == "sigmoid"
    assert int(run.data.metrics["epochs_run"]) == EPOCHS
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(1, EPOCHS + 1)), key
    assert "test.accuracy" in run.data.metrics  # evaluation logged into the same run
    # nothing was written next to the pipeline: no local store, no local artifacts
    assert not (root / "mlflow.db").exists() and not (root / "mlartifacts").exists()
    assert experiment.artifact_location.startswith("mlflow-artifacts:")


def test_figures_and_model_landed_on_the_server(pipeline, client, server):
    import mlflow
    import numpy as np

    _, folder = server
    _, run = _fnn_run(client)
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/training", "figures/evaluation"} <= figures
    stored = {p.name for p in (folder / "artifacts").rglob("*") if p.is_file()}
    assert {"MLmodel", "learning_curves.png", "confusion.png"} <= stored
    mlflow.set_tracking_uri(server[0])
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")  # downloaded over HTTP
    proba = np.asarray(model.predict(np.zeros((2, 8, 8, 1), dtype="float32")))
    assert proba.shape == (2, 10)


def test_compare_reads_the_server(pipeline, server):
    root, env = pipeline
    out = sh([tool("deepfit"), "compare"], root, env)
    assert out.splitlines()[2].startswith("fnn ")
    assert f"1 of 1 runs, experiment 'deepfit', {server[0]}" in out

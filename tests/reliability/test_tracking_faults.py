"""The tracking store when things go wrong: a server that is down or hangs, a failed DVC
experiment that never reached MLflow, and two pipelines writing one sqlite store at once."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deepfit import tracking
from helpers import (
    error_line,
    free_port,
    mlflow_client,
    run_stage,
    snapshot,
    stage_env,
    tiny_params,
    write_params,
)


def test_server_down_fails_the_train_stage_in_seconds_before_training(ready_workdir):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    before = snapshot(ready_workdir)
    started = time.monotonic()
    done = run_stage(
        ready_workdir, "train", "--run", "tiny", env=stage_env(MLFLOW_TRACKING_URI=uri)
    )
    took = time.monotonic() - started
    assert done.returncode == 2
    assert error_line(done, "train@tiny") == (
        f"deepfit train@tiny: error: MLFLOW_TRACKING_URI={uri}: tracking server not reachable "
        "([Errno 111] Connection refused); start it, or unset MLFLOW_TRACKING_URI to log to "
        "mlflow.db at the repository root"
    )
    assert took < 30  # MLflow's own retries would take about four minutes
    assert "Epoch 1" not in done.stdout
    assert snapshot(ready_workdir) == before


def test_a_server_that_accepts_but_never_answers_times_out():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections queue up; nothing ever reads or answers them
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(tracking.TrackingError, match="tracking server not reachable"):
            tracking.check_reachable(uri, timeout=0.5)
        assert time.monotonic() - started < 5


def test_any_http_answer_counts_as_up():
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tracking.check_reachable(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_failed_dvc_experiment_is_recorded_as_a_failed_mlflow_run(workdir):
    """A value that validation refuses inside `dvc exp run` still leaves a trace in MLflow."""
    raw = tiny_params()
    raw["runs"]["tiny"]["dropout"] = 1.5
    write_params(workdir, raw)

    outside = run_stage(workdir, "train", "--run", "tiny")
    assert outside.returncode == 2
    assert not (workdir / "mlflow.db").exists()  # outside DVC experiments nothing is written

    done = run_stage(workdir, "train", "--run", "tiny", env=stage_env(DVC_EXP_NAME="brisk-lark"))
    assert done.returncode == 2
    message = "params.yaml: runs.tiny.dropout: Input should be less than 1 (got 1.5)"
    assert error_line(done, "train@tiny") == f"deepfit train@tiny: error: {message}"
    client = mlflow_client(workdir)
    (run,) = client.search_runs([client.get_experiment_by_name("deepfit").experiment_id])
    assert run.info.run_name == "tiny@brisk-lark"
    assert run.info.status == "FAILED"
    tags = run.data.tags
    assert tags["deepfit.error"] == message
    assert tags["dvc_exp_name"] == "brisk-lark" and tags["deepfit.stage"] == "train@tiny"
    assert (tags["deepfit.run"], tags["deepfit.model"], tags["deepfit.dataset"]) == (
        "tiny",
        "fnn",
        "digits",
    )
    assert "version.keras" in tags
    assert run.data.params["arch.dropout"] == "1.5"
    assert run.data.params["train.optimizer.name"] == "adam"


def test_failed_experiment_with_the_server_down_still_fails_fast(workdir):
    raw = tiny_params()
    raw["train"]["epochs"] = 0
    write_params(workdir, raw)
    uri = f"http://127.0.0.1:{free_port()}"
    env = stage_env(DVC_EXP_NAME="brisk-lark", MLFLOW_TRACKING_URI=uri)
    started = time.monotonic()
    done = run_stage(workdir, "train", "--run", "tiny", env=env)
    assert time.monotonic() - started < 30
    assert done.returncode == 2
    assert "could not record the failure in MLflow" in done.stderr
    expected = "train.epochs: Input should be greater than or equal to 1 (got 0)"
    assert error_line(done, "train@tiny").endswith(expected)


WRITER = """
import sys
from deepfit import tracking
from deepfit.config import load_params
from deepfit.train.callbacks import MlflowMetrics

run = load_params("params.yaml").run(sys.argv[1])
with tracking.start_run(run, "concurrent", {"writer": sys.argv[1]}):
    logger = MlflowMetrics()
    for epoch in range(int(sys.argv[2])):
        logger.on_epoch_end(epoch, {"loss": 1 / (epoch + 1), "val_loss": 2.0, "accuracy": 0.5})
    logger.on_train_end()
"""


@pytest.mark.slow
def test_two_writers_on_one_new_sqlite_store_lose_no_rows(workdir):
    """Two real processes create the store and log per-epoch metrics into it at the same time."""
    run = {"model": "fnn", "dataset": "digits"}
    raw = tiny_params({"one": run, "two": run})
    write_params(workdir, raw)
    epochs = 150
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(epochs)],
            cwd=workdir,
            env=stage_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("one", "two")
    ]
    errors = [w.communicate(timeout=300)[1] for w in writers]
    for writer, err in zip(writers, errors, strict=True):
        assert writer.returncode == 0, err[-3000:]
        assert "database is locked" not in err
    client = mlflow_client(workdir)
    runs = client.search_runs([client.get_experiment_by_name("concurrent").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["one", "two"]
    for run in runs:
        assert run.info.status == "FINISHED"
        for key in ("loss", "val_loss", "accuracy"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(1, epochs + 1)), (run.info.run_name, key)
    assert Path(workdir, "mlflow.db-lock").exists()  # the lock that serialises creating the store

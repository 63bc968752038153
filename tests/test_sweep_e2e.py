"""End to end: queued DVC sweeps, two experiments at a time, checked through MLflow's client.

In a temporary copy of the repo with a tiny pipeline (fnn, 2 epochs):

- `dvc exp run --queue` over the grid fnn's activation (relu, tanh) x the shared optimizer
  (sgd), plus one experiment that diverges, then `dvc queue start -j 2`. DVC runs each in a copy
  under .dvc/tmp/exps/; every run must still land, finished and with one row per epoch, in the
  repository's own mlflow.db, and `deepfit compare` must report them all.
- Then the same repository's team server (`deepfit server --db postgres`, a real PostgreSQL): a
  sweep of two more experiments at `-j 2` with MLFLOW_TRACKING_URI pointing at it, while two more
  processes log to it. No run and no epoch row may be lost, none left RUNNING, and nothing may
  land in the local mlflow.db.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import (
    EPOCHS,
    MLFLOW_LOGGER,
    deepfit_cli,
    free_port,
    mlflow_client,
    running,
    sh,
    shared_folder,
    tiny_repo,
    tool,
)

pytestmark = pytest.mark.slow

GRID = {(activation, name) for activation in ("relu", "tanh") for name in ("sgd",)}
SWEEP = ["-S", "runs.fnn.activation=relu,tanh", "-S", "train.optimizer.name=sgd"]
# exponential activation with plain SGD at learning rate 10: the loss is NaN in the first epoch
DIVERGE = ["-n", "diverge", "-S", "runs.fnn.activation=exponential"]
DIVERGE += ["-S", "++runs.fnn.train.optimizer.name=sgd"]
DIVERGE += ["-S", "++runs.fnn.train.optimizer.learning_rate=10"]
QUEUE_TIMEOUT = 1800  # seconds; 3 tiny experiments take about 2 minutes on 2 busy cores


def queue_status(root: Path, env: dict) -> dict[str, str]:
    """Experiment name -> Queued, Running, Success or Failed, from `dvc queue status`."""
    out = sh(["dvc", "queue", "status"], root, env)
    status = {}
    for line in out.splitlines():
        parts = line.split()  # task  name  created (e.g. "11:24 PM")  status
        if len(parts) >= 4 and parts[0] != "Task" and not line.startswith("Worker"):
            status[parts[1]] = parts[-1]
    return status


def start_queue(root: Path, env: dict) -> None:
    """`dvc queue start -j 2`. Its workers outlive it and keep its output open: to a pipe,
    waiting for that output would wait for the whole queue. They write to a file instead."""
    log = root.parent / "queue-workers.log"
    with log.open("a") as out:
        done = subprocess.run(
            ["dvc", "queue", "start", "-j", "2"],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    assert done.returncode == 0, log.read_text()[-3000:]


def queue_logs(root: Path, env: dict, names) -> str:
    logs = []
    for name in names:
        done = subprocess.run(
            ["dvc", "queue", "logs", name], cwd=root, env=env, capture_output=True, text=True
        )
        logs.append(f"--- dvc queue logs {name}:\n{(done.stdout + done.stderr)[-3000:]}")
    return "\n".join(logs)


def wait_for_queue(root: Path, env: dict, expected: int, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        status = queue_status(root, env)
        busy = [n for n, s in status.items() if s in ("Queued", "Running")]
        if len(status) >= expected and not busy:
            return status
        if time.monotonic() > deadline:
            pytest.fail(
                f"queue not done after {timeout:.0f}s: {status}\n{queue_logs(root, env, busy)}"
            )
        time.sleep(5)


def exp_params(root: Path, env: dict) -> dict[str, dict]:
    """DVC experiment name -> its params.yaml, from `dvc exp show --json`."""
    shown = subprocess.run(
        ["dvc", "exp", "show", "--json"], cwd=root, env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    params = {}
    for commit in json.loads(shown.stdout):
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = (rev.get("data") or {}).get("params") or {}
                params[rev["name"]] = data.get("params.yaml", {}).get("data", {})
    return params


@pytest.fixture(scope="module")
def repo():
    """The tiny repository both sweeps run in, and its environment."""
    base = shared_folder("deepfit-sweep-")  # the team server's cluster lives in the repo
    try:
        root = base / "repo"
        yield root, tiny_repo(root, ["fnn"])
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def sweep(repo):
    root, env = repo
    sh(["dvc", "exp", "run", "--queue", *SWEEP], root, env)
    sh(["dvc", "exp", "run", "--queue", *DIVERGE], root, env)
    try:
        start_queue(root, env)
        status = wait_for_queue(root, env, expected=len(GRID) + 1, timeout=QUEUE_TIMEOUT)
        yield root, env, status
    finally:  # no queue worker outlives the test
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=root, env=env, capture_output=True)


@pytest.fixture(scope="module")
def store(sweep):
    root, _, _ = sweep
    return mlflow_client(root), _local_runs(root)


def _local_runs(root: Path) -> list:
    """The runs in the repository's own mlflow.db."""
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("deepfit")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _sweep_points(sweep) -> dict[str, tuple[str, str]]:
    """Successful experiment name -> (fnn activation, shared optimizer)."""
    root, env, status = sweep
    params = exp_params(root, env)
    return {
        name: (
            params[name]["runs"]["fnn"]["activation"],
            params[name]["train"]["optimizer"]["name"],
        )
        for name, state in status.items()
        if state == "Success"
    }


def test_every_sweep_point_succeeded_and_only_the_divergent_one_failed(sweep):
    root, env, status = sweep
    unexpected = [n for n, s in status.items() if (s == "Failed") != (n == "diverge")]
    assert not unexpected, f"{status}\n{queue_logs(root, env, unexpected)}"
    assert sorted(_sweep_points(sweep).values()) == sorted(GRID)


def test_each_experiment_logged_finished_runs_with_one_row_per_epoch(sweep, store):
    root, _, _ = sweep
    client, runs = store
    points = _sweep_points(sweep)
    by_exp: dict[str, list] = {}
    for run in runs:
        by_exp.setdefault(run.data.tags.get("dvc_exp_name"), []).append(run)
    for exp, (activation, optimizer) in points.items():
        assert [r.info.run_name for r in by_exp.get(exp, [])] == [f"fnn@{exp}"]
        for run in by_exp[exp]:
            assert run.info.status == "FINISHED", run.info.run_name
            assert run.data.params["train.optimizer.name"] == optimizer
            assert run.data.params["arch.activation"] == activation
            epochs = int(run.data.metrics["epochs_run"])
            assert epochs == EPOCHS
            for key in ("loss", "val_loss"):
                steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
                assert steps == list(range(1, epochs + 1)), (run.info.run_name, key)
            assert "test.accuracy" in run.data.metrics
            # artifacts went to the repository root, not into the deleted experiment copy
            artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
            assert artifacts.is_relative_to(root / "mlartifacts") and artifacts.is_dir()
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert not list((root / ".dvc" / "tmp").rglob("mlflow.db"))  # no store in the copies


def test_divergent_experiment_is_a_failed_run_with_its_error(store):
    _, runs = store
    failed = [r for r in runs if r.data.tags.get("dvc_exp_name") == "diverge"]
    assert [r.info.run_name for r in failed] == ["fnn@diverge"]
    assert failed[0].info.status == "FAILED"
    assert "diverged" in failed[0].data.tags["deepfit.error"]
    assert failed[0].data.params["arch.activation"] == "exponential"


def test_deepfit_compare_reports_every_experiment(sweep, store):
    root, env, _ = sweep
    _, runs = store
    points = _sweep_points(sweep)
    deepfit = [tool("deepfit"), "compare"]

    table = sh(deepfit, root, env)
    for exp in points:
        assert f"fnn@{exp} " in table
    assert "fnn@diverge " in table and "FAILED" in table
    assert f"{len(runs)} of {len(runs)} runs" in table

    scored = [r for r in runs if r.info.status == "FINISHED" and "test.accuracy" in r.data.metrics]
    best = max(
        (r for r in scored if r.data.tags["deepfit.model"] == "fnn"),
        key=lambda r: r.data.metrics["test.accuracy"],
    )
    lines = sh([*deepfit, "--best-per", "model"], root, env).splitlines()
    rows = {line.split()[1]: line.split() for line in lines[2:-1]}  # model -> cells
    assert sorted(rows) == ["fnn"]
    assert rows["fnn"][5] == f"{best.data.metrics['test.accuracy']:.4g}"

    failed = sh([*deepfit, "--failed"], root, env)
    assert "fnn@diverge" in failed and "diverged" in failed

    csv_path = root / "sweep.csv"
    sh([*deepfit, "--exp", ",".join(points), "--run", "fnn", "--csv", str(csv_path)], root, env)
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + len(points)


# ---------------------------------------------------------------- the team server

TEAM_SWEEP = ["-S", "runs.fnn.activation=elu,selu", "-S", "train.epochs=20"]
TEAM_POINTS = {"elu", "selu"}
LOGGED_EPOCHS = 200  # of each of the two MLflow clients logging beside the sweep


def _running_runs(client, experiment_id: str) -> list:
    return client.search_runs([experiment_id], "attributes.status = 'RUNNING'")


@pytest.fixture(scope="module")
def team_sweep(repo, sweep):
    """The repository's `deepfit server --db postgres`; two queued experiments at -j 2 logging
    to it, and two MLflow clients logging to it once the first experiment's run is open.

    Returns (server client, experiment id, names of the two experiments, local run ids before)."""
    from mlflow.tracking import MlflowClient

    root, env = repo
    before = {r.info.run_id for r in _local_runs(root)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state_file = root / ".dvc" / "tmp" / "deepfit" / "server.json"
    started = deepfit_cli(root, "server", "--db", "postgres", "--port", str(port), "--detach")
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    team_env = {**env, "MLFLOW_TRACKING_URI": url}
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        client = MlflowClient(url)
        # a team's server has its experiment; creating it while four processes race to is
        # MLflow's own business (and once lost a client's run)
        experiment_id = client.create_experiment("deepfit")
        sh(["dvc", "exp", "run", "--queue", *TEAM_SWEEP], root, team_env)
        start_queue(root, team_env)
        deadline = time.monotonic() + QUEUE_TIMEOUT
        while not _running_runs(client, experiment_id):
            assert time.monotonic() < deadline, "no run of the team sweep opened on the server"
            time.sleep(0.2)
        clients = [
            subprocess.Popen(
                [sys.executable, "-c", MLFLOW_LOGGER, url, name, str(LOGGED_EPOCHS)],
                env=team_env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in ("client1", "client2")
        ]
        errors = [c.communicate(timeout=600)[1] for c in clients]
        assert all(c.returncode == 0 for c in clients), errors
        status = wait_for_queue(root, team_env, len(GRID) + 1 + 2, QUEUE_TIMEOUT)
        new = {name: s for name, s in status.items() if name not in sweep[2]}
        assert sorted(new.values()) == ["Success", "Success"], (
            f"{new}\n{queue_logs(root, team_env, new)}"
        )
        yield client, experiment_id, sorted(new), before
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=root, env=env, capture_output=True)
        deepfit_cli(root, "server", "stop")
        for proc in (state.get("mlflow"), state.get("postgres")):
            if proc and running(proc["pid"]):  # stop failed: leave no server behind
                os.kill(proc["pid"], signal.SIGKILL)


def test_team_sweep_and_two_writers_lose_nothing_on_postgres(repo, team_sweep):
    root, env = repo
    client, experiment_id, exps, before = team_sweep
    runs = client.search_runs([experiment_id], max_results=100)
    by_name = {r.info.run_name: r for r in runs}
    assert sorted(by_name) == sorted([*(f"fnn@{e}" for e in exps), "client1", "client2"])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    params = exp_params(root, env)
    assert {params[e]["runs"]["fnn"]["activation"] for e in exps} == TEAM_POINTS
    for name, run in by_name.items():
        assert run.info.status == "FINISHED", name
        epochs = LOGGED_EPOCHS if name.startswith("client") else int(run.data.metrics["epochs_run"])
        for key in ("loss", "val_loss"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(1, epochs + 1)), (name, key)
    # each client wrote while a run of the sweep was open: the writers were concurrent
    trained = [by_name[f"fnn@{e}"].info for e in exps]
    for name in ("client1", "client2"):
        info = by_name[name].info
        assert any(t.start_time < info.end_time and info.start_time < t.end_time for t in trained)
    # nothing of the team sweep went to the local store
    assert {r.info.run_id for r in _local_runs(root)} == before


def test_team_runs_show_kind_and_datasets(repo, team_sweep):
    root, _ = repo
    client, experiment_id, exps, _ = team_sweep
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == (
        "custom_model_development"
    )
    run = client.search_runs([experiment_id], f"attributes.run_name = 'fnn@{exps[0]}'")[0]
    manifest = json.loads((root / "data/prepared/digits/manifest.json").read_text())
    inputs = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset
        for i in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "validation", "testing"}
    for split, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
        assert inputs[context].name == "digits"
        assert inputs[context].digest == manifest["splits"][split]["sha256"][:32]
        assert manifest["splits"][split]["file"] in inputs[context].source

"""End to end: a queued DVC sweep, two experiments at a time, checked through MLflow's client.

In a temporary copy of the repo with a tiny pipeline (fnn and cnn, 2 epochs): `dvc exp run
--queue` over the grid fnn's activation (relu, tanh) x the shared optimizer (sgd), 2 experiments
that both retrain cnn or restore it from DVC's run cache, plus one experiment that diverges, then
`dvc queue start -j 2`. DVC runs each in a copy under .dvc/tmp/exps/; every run
must still land, finished and with one row per epoch, in the repository's own mlflow.db, and
`deepfit compare` must report them all.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from helpers import EPOCHS, mlflow_client, sh, tiny_repo, tool

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
def sweep(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sweep") / "repo"
    env = tiny_repo(root, ["fnn", "cnn"])
    sh(["dvc", "exp", "run", "--queue", *SWEEP], root, env)
    sh(["dvc", "exp", "run", "--queue", *DIVERGE], root, env)
    try:
        sh(["dvc", "queue", "start", "-j", "2"], root, env)
        status = wait_for_queue(root, env, expected=len(GRID) + 1, timeout=QUEUE_TIMEOUT)
        yield root, env, status
    finally:  # no queue worker outlives the test
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=root, env=env, capture_output=True)


@pytest.fixture(scope="module")
def store(sweep):
    root, _, _ = sweep
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("deepfit")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return client, runs


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
        names = sorted(r.info.run_name for r in by_exp.get(exp, []))
        # cnn retrains only where the shared optimizer changed, and not at all when DVC
        # restores it from the run cache of another experiment with the same params
        assert names in ([f"fnn@{exp}"], [f"cnn@{exp}", f"fnn@{exp}"]), (exp, names)
        assert optimizer == "sgd" or names == [f"fnn@{exp}"], (exp, names)
        for run in by_exp[exp]:
            assert run.info.status == "FINISHED", run.info.run_name
            assert run.data.params["train.optimizer.name"] == optimizer
            if run.data.tags["deepfit.run"] == "fnn":
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
    cnn_runs = [r for r in runs if r.info.run_name.startswith("cnn@")]
    assert 1 <= len(cnn_runs) <= 2  # the two sgd experiments: one trains, one may reuse it
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
    assert sorted(rows) == ["cnn", "fnn"]
    assert rows["fnn"][5] == f"{best.data.metrics['test.accuracy']:.4g}"

    failed = sh([*deepfit, "--failed"], root, env)
    assert "fnn@diverge" in failed and "diverged" in failed

    csv_path = root / "sweep.csv"
    sh([*deepfit, "--exp", ",".join(points), "--run", "fnn", "--csv", str(csv_path)], root, env)
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + len(points)

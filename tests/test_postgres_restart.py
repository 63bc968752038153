"""PostgreSQL restarted under a sweep: `deepfit server --db postgres` behind two real train
stages logging at once (what `dvc queue start -j 2` runs), and `pg_ctl restart -m fast` once both
have logged epochs. Each stage must either finish with every epoch row on the server, or fail
with one line and, run again, finish; no run is left RUNNING and no epoch row is lost or doubled.

A file of its own: its server is restarted, which the `team` server of test_team_server.py must
not be (`deepfit server stop` stops the postmaster it started, by PID, not a restarted one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import (
    TINY_RUN,
    copy_tree,
    deepfit_cli,
    error_line,
    free_port,
    make_workdir,
    shared_folder,
    stage_env,
    tiny_params,
)

pytestmark = pytest.mark.slow

RUNS = ("a", "b")
EPOCHS = 80  # about 0.1 s each: the restart lands mid-fit
RESTART_AFTER = 5  # epochs on the server of both runs before PostgreSQL restarts


def _pg_ctl(cluster: Path, log: Path, action: str) -> subprocess.CompletedProcess:
    """``pg_ctl`` on deepfit's cluster as its owner (user postgres when we are root)."""
    from deepfit.server import PG_OWNER

    cmd = ["pg_ctl", "-D", str(cluster), "-l", str(log), "-m", "fast", "-w", "-t", "60", action]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", PG_OWNER, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def server(prepared_digits: Path):
    """A project with runs a and b and its own `deepfit server --db postgres --detach`."""
    from deepfit.server import Paths

    base = shared_folder("deepfit-restart-")
    run = {**TINY_RUN, "train": {"early_stopping": {"enabled": False}}}
    root = make_workdir(
        base / "repo", tiny_params(runs={n: dict(run) for n in RUNS}, epochs=EPOCHS)
    )
    (root / ".dvc").mkdir(exist_ok=True)
    copy_tree(prepared_digits, root / "data" / "prepared" / "digits")
    port = free_port()
    paths = Paths.for_repo(root)
    try:
        started = deepfit_cli(root, "server", "--db", "postgres", "--port", str(port), "--detach")
        assert started.returncode == 0, started.stdout + started.stderr
        yield root, f"http://127.0.0.1:{port}", paths
    finally:
        deepfit_cli(root, "server", "stop")  # mlflow by PID; the restarted postmaster is ours
        if (paths.cluster / "postmaster.pid").exists():
            _pg_ctl(paths.cluster, paths.postgres_log, "stop")
        shutil.rmtree(base, ignore_errors=True)


def _epochs_logged(client, run_name: str) -> int:
    experiment = client.get_experiment_by_name("deepfit")
    if experiment is None:
        return 0
    found = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{run_name}'")
    return len(client.get_metric_history(found[0].info.run_id, "loss")) if found else 0


def _train(root: Path, url: str, run: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "deepfit.stages.train", "--run", run],
        cwd=root, env=stage_env(MLFLOW_TRACKING_URI=url), text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,  # a few KB: the pipe never fills
    )  # fmt: skip


def test_postgres_restart_mid_sweep_loses_nothing_or_fails_in_one_line_and_resumes(server):
    from mlflow.tracking import MlflowClient

    root, url, paths = server
    client = MlflowClient(url)
    client.create_experiment("deepfit")  # a team's server has it; the stages race otherwise
    stages = {run: _train(root, url, run) for run in RUNS}
    deadline = time.monotonic() + 300
    while min(_epochs_logged(client, run) for run in RUNS) < RESTART_AFTER:
        assert all(p.poll() is None for p in stages.values()), "a stage ended before the restart"
        assert time.monotonic() < deadline, "the stages logged no epochs"
        time.sleep(0.3)
    restarted = _pg_ctl(paths.cluster, paths.postgres_log, "restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert min(_epochs_logged(client, run) for run in RUNS) < EPOCHS  # it was mid-fit

    outcomes = {}
    for run, stage in stages.items():
        _, stderr = stage.communicate(timeout=600)
        if stage.returncode == 0:
            outcomes[run] = "finished"
            continue
        done = subprocess.CompletedProcess(stage.args, stage.returncode, "", stderr)
        outcomes[run] = f"failed: {error_line(done, f'train@{run}')}"
        again = _train(root, url, run)
        _, stderr = again.communicate(timeout=600)
        assert again.returncode == 0, stderr[-3000:]
    print(f"\nafter the PostgreSQL restart: {json.dumps(outcomes)}")

    experiment = client.get_experiment_by_name("deepfit")
    runs = client.search_runs([experiment.experiment_id])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    for run in RUNS:
        summary = json.loads((root / "models" / run / "run.json").read_text())
        final = client.get_run(summary["mlflow_run_id"])
        assert final.info.status == "FINISHED", run
        for key in ("loss", "val_loss"):
            steps = [m.step for m in client.get_metric_history(final.info.run_id, key)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (run, key, outcomes[run])

"""Faults under the real `dvc repro`, in a temporary copy of the repository on tiny params.

- `kill -9` of a training stage mid-run, then `dvc repro` again: training resumes after the last
  completed epoch, the killed MLflow run is closed as KILLED and linked from the new one.
- A learning rate that makes the loss explode: the stage fails at once, DVC caches nothing.
- A bad params value: the stage fails in one line, dvc.lock does not change.
- Determinism: the same params and seeds give the same metrics files, bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers import (
    TINY_RUN,
    copy_repo,
    git_repo,
    mlflow_client,
    run_stage,
    runs_named,
    sh,
    tiny_params,
    write_params,
)

pytestmark = pytest.mark.slow

# Enough epochs that the kill lands mid-training even on a loaded machine.
SLOW_EPOCHS = 10
RUNS = {
    "tiny": dict(TINY_RUN),
    # about a second per epoch (batches of 4): slow enough to kill in the middle
    "slow": {
        **TINY_RUN,
        "units": [32],
        "train": {"epochs": SLOW_EPOCHS, "batch_size": 4, "steps_per_execution": 1},
    },
    # plain gradient descent at learning rate 10 on sunspot numbers: the loss explodes
    "boom": {
        "model": "rnn",
        "dataset": "sunspots",
        "units": [8],
        "train": {"epochs": 5, "optimizer": {"name": "sgd", "learning_rate": 10.0}},
    },
}


def _sh(cmd: list[str], cwd: Path, env: dict[str, str], ok: bool = True) -> str:
    return sh(cmd, cwd, env, ok=ok, timeout=600)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A committed copy of the repository where `dvc repro train@tiny` has run."""
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    root.mkdir()
    copy_repo(root)
    write_params(root, tiny_params(RUNS))
    env = git_repo(root)
    _sh(["dvc", "repro", "train@tiny"], root, env)
    return root, env


def _lock(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            ppid = int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _training_process(dvc_pid: int, run: str) -> int | None:
    for pid in _descendants(dvc_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"deepfit.stages.train" in cmdline and run.encode() in cmdline:
            return pid
    return None


def _backup_epoch(root: Path, run: str) -> int:
    for meta in root.glob(f".dvc/tmp/deepfit/backups/{run}-*/keras/training_metadata.json"):
        try:
            return int(json.loads(meta.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            return 0  # being written
    return 0


def test_kill_9_mid_training_then_repro_resumes(repo):
    root, env = repo
    dvc = subprocess.Popen(
        ["dvc", "repro", "train@slow"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    while _backup_epoch(root, "slow") < 2 and time.monotonic() < deadline:
        assert dvc.poll() is None, dvc.communicate()[0][-3000:]
        time.sleep(0.05)
    seen = _backup_epoch(root, "slow")
    stage_pid = _training_process(dvc.pid, "slow")
    assert seen >= 2 and stage_pid is not None
    os.kill(stage_pid, signal.SIGKILL)
    output = dvc.communicate(timeout=120)[0]
    assert dvc.returncode != 0 and "train@slow" in output

    # The failed stage left nothing DVC would cache, and dvc.lock has no entry for it.
    assert "train@slow" not in _lock(root)
    assert not (root / "models" / "slow").exists()
    assert not (root / "reports" / "plots" / "slow" / "curves").exists()
    epochs_done = _backup_epoch(root, "slow")
    assert epochs_done >= seen
    (killed,) = runs_named(root, "slow")
    assert killed.info.status == "RUNNING"  # until the next stage notices the process is gone

    output = _sh(["dvc", "repro", "train@slow"], root, env)
    resumed = re.search(r"resuming after epoch (\d+) of (\d+)", output)
    assert resumed and int(resumed.group(1)) == epochs_done, output[-3000:]
    # at most the epoch in progress at the kill was lost: training went on with the next one
    epoch_lines = re.findall(r"^Epoch (\d+)/\d+", output, re.M)
    assert epoch_lines[0] == str(epochs_done + 1) and epoch_lines[-1] == str(SLOW_EPOCHS)

    history = json.loads((root / "models" / "slow" / "history.json").read_text())
    assert {len(v) for v in history.values()} == {SLOW_EPOCHS}
    assert json.loads((root / "models" / "slow" / "run.json").read_text())["epochs"] == SLOW_EPOCHS
    assert "train@slow" in _lock(root)
    assert not list(root.glob(".dvc/tmp/deepfit/backups/slow-*"))  # deleted after success
    leftovers = [p for p in (root / "models").rglob(".*")]
    leftovers += [p for p in (root / "reports").rglob(".*")]
    assert not leftovers  # the killed attempt's staging folders were swept

    client = mlflow_client(root)
    new, old = runs_named(root, "slow")
    assert old.info.run_id == killed.info.run_id
    assert old.info.status == "KILLED"
    assert old.data.tags["deepfit.error"].startswith(f"killed: process {stage_pid} on ")
    assert new.info.status == "FINISHED"
    assert new.data.tags["deepfit.resumed_from"] == old.info.run_id
    assert new.data.tags["deepfit.resumed_after_epoch"] == str(epochs_done)
    steps = [m.step for m in client.get_metric_history(new.info.run_id, "val_loss")]
    assert sorted(steps) == list(range(1, SLOW_EPOCHS + 1))  # the whole curve, in the new run


def test_diverging_loss_fails_the_stage_and_caches_nothing(repo):
    root, env = repo
    output = _sh(["dvc", "repro", "train@boom"], root, env, ok=False)
    errors = [line for line in output.splitlines() if line.startswith("deepfit train@boom:")]
    assert len(errors) == 1
    assert re.match(r"deepfit train@boom: error: training diverged at epoch \d+", errors[0])
    assert "train.optimizer.learning_rate" in errors[0]
    assert "train@boom" not in _lock(root)
    assert not (root / "models" / "boom").exists()
    assert not (root / "reports" / "plots" / "boom").exists()
    assert not list(root.glob(".dvc/tmp/deepfit/backups/boom-*"))  # nothing to resume from

    (run,) = runs_named(root, "boom")
    assert run.info.status == "FAILED"
    assert run.data.tags["deepfit.error"].startswith("TrainingDiverged: training diverged at epoch")
    failed_at = int(re.search(r"epoch (\d+)", run.data.tags["deepfit.error"]).group(1))
    client = mlflow_client(root)
    for key in ("loss", "val_loss"):
        history = client.get_metric_history(run.info.run_id, key)
        # the curves up to the failure, all finite: the diverged epoch is not logged
        assert [m.step for m in history] == list(range(1, failed_at))
        assert all(abs(m.value) < float("inf") for m in history)


def test_bad_params_value_leaves_dvc_lock_alone_and_loses_nothing(repo):
    root, env = repo
    params = (root / "params.yaml").read_text()
    lock = (root / "dvc.lock").read_bytes()
    model_dir = root / "models" / "tiny"
    outputs = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    try:
        (root / "params.yaml").write_text(params.replace("epochs: 2", "epochs: ten", 1))
        output = _sh(["dvc", "repro", "train@tiny"], root, env, ok=False)
    finally:
        (root / "params.yaml").write_text(params)
    errors = [line for line in output.splitlines() if line.startswith("deepfit train@tiny:")]
    assert errors == [
        "deepfit train@tiny: error: params.yaml: train.epochs: Input should be a valid integer "
        "(got 'ten')"
    ]
    assert (root / "dvc.lock").read_bytes() == lock
    # DVC cleared the stage's outputs before running it; with the params back they come back
    # from DVC's cache, unchanged, without training again.
    output = _sh(["dvc", "repro", "train@tiny"], root, env)
    assert "Running stage" not in output
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == outputs


def test_same_params_and_seeds_give_bit_identical_metrics(repo):
    """Train and evaluate twice in separate processes, as DVC would: the metrics and evidence
    files are byte-identical; only <run>.run.json (MLflow run id, wall time) differs."""
    root, env = repo
    first_history = (root / "models" / "tiny" / "history.json").read_bytes()
    metrics = root / "reports" / "metrics" / "tiny.json"
    evidence = root / "reports" / "evidence" / "tiny.json"
    run_info = root / "reports" / "evidence" / "tiny.run.json"
    assert run_stage(root, "baseline", "--dataset", "digits", env=env).returncode == 0
    assert run_stage(root, "evaluate", "--run", "tiny", env=env).returncode == 0
    first, first_info = metrics.read_bytes(), json.loads(run_info.read_text())
    first_evidence = evidence.read_bytes()
    assert run_stage(root, "train", "--run", "tiny", env=env).returncode == 0
    assert run_stage(root, "evaluate", "--run", "tiny", env=env).returncode == 0
    second, second_info = metrics.read_bytes(), json.loads(run_info.read_text())

    assert (root / "models" / "tiny" / "history.json").read_bytes() == first_history
    assert first == second
    assert evidence.read_bytes() == first_evidence
    assert set(json.loads(first)) == {"test", "baseline", "fit"}
    assert set(json.loads(first_evidence)) == {
        "test",
        "baselines",
        "strongest_baseline",
        "versus_baseline",
        "train",
        "fit",
        "gradients",
    }
    assert first_info["mlflow"]["run_id"] != second_info["mlflow"]["run_id"]

"""Interruption: SIGTERM and SIGINT end the MLflow run as KILLED and keep the training backup;
runs left RUNNING by a killed process are closed as KILLED by the next stage that connects.

`kill -9` followed by `dvc repro` is in test_pipeline_faults.py.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from deepfit import tracking
from helpers import TINY_RUN, runs_named, stage_env, tiny_params, write_params

# far more than the test lets run: each process is stopped after its first or second epoch
EPOCHS = 50


def _start(root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "deepfit.stages.train", "--run", "slow"],
        cwd=root,
        env=stage_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _backed_up_epoch(root: Path) -> int:
    """The last epoch in the run's Keras backup (0 if none)."""
    epochs = [0]
    for meta in root.glob(".dvc/tmp/deepfit/backups/slow-*/keras/training_metadata.json"):
        with contextlib.suppress(OSError, ValueError):  # being written
            epochs.append(json.loads(meta.read_text())["epoch"])
    return max(epochs)


def _wait_for_epoch(root: Path, process: subprocess.Popen, epoch: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        if _backed_up_epoch(root) >= epoch:
            return
        time.sleep(0.05)
    raise AssertionError("training made no progress")


@pytest.mark.slow
def test_sigterm_and_sigint_end_the_run_killed_and_training_resumes(ready_workdir):
    root = ready_workdir
    slow = {**TINY_RUN, "units": [32], "train": {"epochs": EPOCHS, "batch_size": 4}}
    slow["train"]["steps_per_execution"] = 1  # one step per call: slow epochs
    write_params(root, tiny_params({"slow": slow}))

    first = _start(root)
    _wait_for_epoch(root, first, 1)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 143
    assert err.rstrip().endswith("deepfit train@slow: interrupted (SIGTERM)")

    # The first may have backed up a later epoch before it stopped: wait for one the second
    # trained. A signal sent earlier finds it starting up, before its handlers; where SIGINT is
    # inherited as ignored (a background job, as in CI), the run then finished with exit 0.
    second = _start(root)  # resumes, then Ctrl-C
    _wait_for_epoch(root, second, _backed_up_epoch(root) + 1)
    second.send_signal(signal.SIGINT)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 130
    assert "resuming after epoch" in err
    assert err.rstrip().endswith("deepfit train@slow: interrupted (SIGINT)")

    assert not (root / "models").exists() or not any((root / "models").iterdir())
    assert list(root.glob(".dvc/tmp/deepfit/backups/slow-*/state.json"))  # kept for the next run
    runs = runs_named(root, "slow")
    assert [r.info.status for r in runs] == ["KILLED", "KILLED"]
    assert runs[1].data.tags["deepfit.error"] == "interrupted (SIGTERM)"
    assert runs[0].data.tags["deepfit.error"] == "interrupted (SIGINT)"
    assert runs[0].data.tags["deepfit.resumed_from"] == runs[1].info.run_id


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking.tracking_uri(tmp_path))


def test_runs_of_dead_processes_are_closed_as_killed(store):
    """Only runs of this host whose process is gone; a live writer and other hosts are kept."""
    experiment = store.create_experiment("orphans")
    code = "import os; print(os.getpid())"
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dead_pid = gone.stdout.strip()
    cases = {
        "dead": {"deepfit.host": tracking.HOST, "deepfit.pid": dead_pid},
        "alive": tracking.process_tags(),
        "other host": {"deepfit.host": "elsewhere", "deepfit.pid": dead_pid},
        "untagged": {},
    }
    ids = {
        name: store.create_run(experiment, tags=tags).info.run_id for name, tags in cases.items()
    }

    tracking._connect("orphans")

    status = {name: store.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {
        "dead": "KILLED",
        "alive": "RUNNING",
        "other host": "RUNNING",
        "untagged": "RUNNING",
    }
    reason = store.get_run(ids["dead"]).data.tags["deepfit.error"]
    assert reason == f"killed: process {dead_pid} on {tracking.HOST} ended without closing the run"


def test_a_reused_pid_is_not_mistaken_for_the_writer(store):
    experiment = store.create_experiment("reused")
    tags = {**tracking.process_tags(), "deepfit.pid_start": "1"}  # our pid, another start time
    run_id = store.create_run(experiment, tags=tags).info.run_id
    assert tracking.close_orphans(experiment) == [run_id]
    assert store.get_run(run_id).info.status == "KILLED"


@pytest.mark.parametrize("status", [130, 143, 2, 0])
def test_a_stage_program_keeps_its_exit_status_and_runs_its_atexit_callbacks(tmp_path, status):
    """Interrupted (130, 143) it leaves without Python's finalisation (which could crash on
    TensorFlow's half-built state), but MLflow's flush and logging's, registered with atexit,
    still run."""
    flushed = tmp_path / "flushed"
    code = (
        "import atexit, sys\n"
        "from deepfit.stages._cli import run_program\n"
        f"atexit.register(lambda: open({str(flushed)!r}, 'w').close())\n"
        "def main():\n"
        f"    raise SystemExit({status})\n"
        "run_program(main)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=stage_env(), capture_output=True)
    assert done.returncode == status, done.stderr
    assert flushed.exists()


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_a_library_turned_into_its_own_error_still_ends_the_stage_interrupted(
    capsys, signum, status
):
    """SQLAlchemy, hit by Ctrl-C inside a transaction, raises PendingRollbackError on the next
    query: the stage reports the interruption, not that error's traceback."""
    from deepfit.stages._cli import stage

    before = signal.getsignal(signum)
    with pytest.raises(SystemExit) as stopped, stage("evaluate@run"):
        with contextlib.suppress(KeyboardInterrupt):  # swallowed, as a library's clean-up may
            signal.raise_signal(signum)
        raise RuntimeError("This Session's transaction has been rolled back")
    assert stopped.value.code == status
    assert capsys.readouterr().err.splitlines() == [
        f"deepfit evaluate@run: interrupted ({signal.Signals(signum).name})"
    ]
    assert signal.getsignal(signum) is before


def test_a_failure_without_a_signal_is_not_called_an_interruption():
    from deepfit.stages._cli import stage

    with pytest.raises(RuntimeError, match="a bug"), stage("evaluate@run"):
        raise RuntimeError("a bug")


def _database_call(seconds: float) -> Callable[[], str]:
    """A function that runs as a database driver's code (its module named like SQLAlchemy's),
    receives a SIGINT, and works on for ``seconds``."""
    namespace = {"__name__": "sqlalchemy.engine.stand_in", "signal": signal, "time": time}
    exec(
        "def write():\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        f"    time.sleep({seconds})\n"
        "    return 'committed'\n",
        namespace,
    )
    return namespace["write"]


def test_a_signal_inside_a_database_call_interrupts_once_the_call_returns(capsys):
    """An exception in the middle of a write could leave its transaction open and sqlite's
    write lock held (other workers' writes then fail after 20 s): the signal waits."""
    from deepfit.stages._cli import stage

    done = []
    with pytest.raises(SystemExit) as stopped, stage("tune@search"):
        done.append(_database_call(0.3)())
        time.sleep(2)  # the signal, sent again every 50 ms, arrives here
        done.append("after")
    assert done == ["committed"]
    assert stopped.value.code == 130
    assert capsys.readouterr().err.splitlines() == ["deepfit tune@search: interrupted (SIGINT)"]


def test_a_database_call_that_does_not_return_is_interrupted_after_the_limit(monkeypatch):
    from deepfit.stages import _cli

    monkeypatch.setattr(_cli, "MAX_DEFER_SECONDS", 0.2)
    started = time.monotonic()
    with pytest.raises(SystemExit) as stopped, _cli.stage("tune@search"):
        _database_call(5)()
    assert stopped.value.code == 130 and time.monotonic() - started < 2


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_that_lands_in_a_finalizer_is_sent_again(capsys, signum, status):
    """Python cannot raise the handler's exception inside a finalizer or a weakref callback
    (it prints "Exception ignored in ..." and goes on): the stage must still stop."""
    from deepfit.stages._cli import stage

    class Finalized:
        def __del__(self) -> None:
            signal.raise_signal(signum)

    done = []
    with pytest.raises(SystemExit) as stopped, stage("tune@search"):
        Finalized()  # collected at once: the signal lands in its __del__
        done.append("finalized")
        time.sleep(2)  # sent again 50 ms later, it interrupts here
        done.append("after")
    assert done == ["finalized"]
    assert stopped.value.code == status
    err = capsys.readouterr().err
    assert (
        err.splitlines()[-1] == f"deepfit tune@search: interrupted ({signal.Signals(signum).name})"
    )

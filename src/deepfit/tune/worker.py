"""A worker: take the next trial of the shared study, run it, tell the study, until the budget
or the time is used up. Failed trials are told FAILED and the worker goes on; an interrupted one
is failed and queued to run again with the same values."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfit import tracking
from deepfit.outputs import one_line
from deepfit.tune import storage as stores
from deepfit.tune.space import sampler
from deepfit.tune.trial import TrialContext, run_trial

if TYPE_CHECKING:
    import optuna

    from deepfit.config import Params, TuningConfig

log = logging.getLogger(__name__)


def work(
    search: TuningConfig,
    params: Params,
    study: optuna.Study,
    parent_run_id: str | None,
    wait_parent: bool = False,
) -> int:
    """Run trials of ``study`` in this process; return how many this worker ran.
    ``wait_parent``: a worker process of ``deepfit tune --workers N`` takes the parent run
    from the study, where the process that started it puts it while the workers start up."""
    from deepfit.data import load_prepared

    data = load_prepared(Path("data/prepared") / search.base.dataset)
    tracking.connect(params.mlflow.experiment)
    if wait_parent:
        parent_run_id = _parent_from_study(study)
    ctx = TrialContext(search, params, data, _existing_run(parent_run_id))
    deadline = time.monotonic() + search.timeout if search.timeout else None
    done = 0
    while deadline is None or time.monotonic() < deadline:
        trial = next_trial(study, search)
        if trial is None:
            break
        run_one(study, trial, ctx)
        done += 1
    return done


def next_trial(study: optuna.Study, search: TuningConfig) -> optuna.Trial | None:
    """The next trial (a queued retry first), or None when the budget is used up."""
    storage = stores.rdb(study)
    with stores.budget_lock(storage, search.name):
        stores.fail_dead_trials(study)
        if not stores.budget_left(study, search):
            return None
        study.sampler = sampler(search, stores.budget_used(study))
        trial = study.ask()
        for key, value in stores.worker_attrs().items():
            trial.set_user_attr(key, value)
    return trial


def run_one(study: optuna.Study, trial: optuna.Trial, ctx: TrialContext) -> str:
    """Run one trial and tell the study how it ended: complete, pruned or failed."""
    from optuna.trial import TrialState

    with stores.heartbeat(stores.rdb(study), trial):
        try:
            result = run_trial(trial, ctx)
        except KeyboardInterrupt:
            _interrupted(study, trial)
            raise
        except Exception as exc:
            message = one_line(exc)[:2000]
            log.warning("trial %d failed: %s", trial.number, message)
            trial.set_user_attr("deepfit.error", message)
            study.tell(trial, state=TrialState.FAIL)
            return "failed"
    if result.state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, result.value)
    return result.state


def _interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    """Ctrl-C or SIGTERM during a trial: fail it and queue it again with the same values."""
    from optuna.trial import TrialState

    trial.set_user_attr("deepfit.error", "interrupted")
    frozen = study.tell(trial, state=TrialState.FAIL)
    stores._retry_callback()(study, frozen)
    log.warning("trial %d interrupted: failed, queued to run again", trial.number)


def _parent_from_study(study: optuna.Study, timeout: float = 120) -> str | None:
    """The MLflow parent run id the coordinating process records in the study."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = study.user_attrs.get(stores.PARENT_RUN)
        if found:
            return found
        time.sleep(0.5)
    log.warning("no parent run recorded in the study after %d s: trials logged without it", timeout)
    return None


def _existing_run(run_id: str | None) -> str | None:
    """The parent run if this worker's MLflow store has it (a worker on another machine that
    logs elsewhere records its trials as top-level runs)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if run_id is None:
        return None
    try:
        mlflow.get_run(run_id)
    except MlflowException:
        log.warning(
            "parent run %s is not in %s: trials logged without it", run_id, tracking.tracking_uri()
        )
        return None
    return run_id


def worker_command(params_file: str, name: str, url: str, threads: int) -> list[str]:
    """The command line of one worker process (the tune stage in worker mode)."""
    import sys

    return [
        sys.executable,
        "-m",
        "deepfit.stages.tune",
        "--params",
        params_file,
        "--search",
        name,
        "--storage",
        url,
        "--worker",
        "--threads",
        str(threads),
    ]


def spawn(commands: list[list[str]]) -> list[Any]:
    """Start worker processes in this one's environment and folder. Each gets its own session:
    Ctrl-C reaches only this process, which passes one SIGINT on to each worker (a second one
    would interrupt a worker while it fails its trial and queues the retry)."""
    import subprocess

    return [subprocess.Popen(cmd, start_new_session=True) for cmd in commands]

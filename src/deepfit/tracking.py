"""MLflow tracking: where the store is, one run per deepfit run execution, tags and resumption.

MLflow is imported inside functions: stages validate params before paying for the import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities import Run

    from deepfit.config import RunConfig

log = logging.getLogger(__name__)

# DVC runs queued experiments in full copies of the repository below this folder; their
# results must land in the user's store, not in a copy that DVC deletes afterwards.
_EXPS_TMP = os.path.join(".dvc", "tmp", "exps")
_VERSIONED = ("tensorflow-cpu", "keras", "mlflow", "dvc", "numpy", "deepfit")


def repo_root(start: Path | None = None) -> Path:
    """The user's repository root, also when running inside a DVC experiment copy."""
    path = (start or Path.cwd()).resolve()
    text = str(path)
    marker = os.sep + _EXPS_TMP + os.sep
    if marker in text + os.sep:
        return Path(text.split(marker)[0] if marker in text else text[: -len(_EXPS_TMP) - 1])
    for candidate in (path, *path.parents):
        if (candidate / "dvc.yaml").exists() or (candidate / ".dvc").is_dir():
            return candidate
    return path


def tracking_uri(start: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the sqlite store ``mlflow.db`` at the repo root."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{repo_root(start) / 'mlflow.db'}"


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_tags(run: RunConfig) -> dict[str, str]:
    """Tags that identify a run everywhere: names, git commit, DVC experiment, versions."""
    commit = git_commit()
    tags = {
        "deepfit.run": run.name,
        "deepfit.model": run.model,
        "deepfit.dataset": run.dataset,
        "mlflow.source.git.commit": commit,
        "git_commit": commit,
    }
    exp_name = os.environ.get("DVC_EXP_NAME")
    if exp_name:
        tags["dvc_exp_name"] = exp_name
    tags.update({f"version.{k}": v for k, v in library_versions().items()})
    return tags


def mlflow_run_name(run_name: str) -> str:
    """Readable MLflow run name: ``cnn``, or ``cnn@<dvc exp>`` inside a DVC experiment."""
    exp_name = os.environ.get("DVC_EXP_NAME")
    return f"{run_name}@{exp_name}" if exp_name else run_name


def _connect(experiment: str) -> Any:
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri.startswith(("sqlite:", "file:")) and mlflow.get_experiment_by_name(experiment) is None:
        # Pin artifacts to the repo root: MLflow's default is relative to the working directory,
        # which for a queued DVC experiment is a copy that DVC deletes afterwards.
        location = (repo_root() / "mlartifacts").as_uri()
        with contextlib.suppress(MlflowException):  # created meanwhile by a parallel stage
            mlflow.create_experiment(experiment, artifact_location=location)
    return mlflow.set_experiment(experiment)


@contextmanager
def start_run(run: RunConfig, experiment: str, params: Mapping[str, Any]) -> Iterator[Run]:
    """Open a new MLflow run for ``run`` with its params and tags.

    The ``with`` block ends the run as FINISHED, or FAILED/KILLED when the block raises, so a
    failing stage never leaves a run marked RUNNING.
    """
    import mlflow

    _connect(experiment)
    with mlflow.start_run(run_name=mlflow_run_name(run.name), tags=run_tags(run)) as active:
        mlflow.log_params({k: _param_value(v) for k, v in params.items()})
        log.info("MLflow run %s (%s) in %s", active.info.run_id, run.name, tracking_uri())
        with _status_on_error():
            yield active


class TrackingError(RuntimeError):
    """The MLflow store does not hold what the pipeline expects; the message says what to do."""


@contextmanager
def resume_run(run_id: str, experiment: str, run_name: str = "") -> Iterator[Run]:
    """Reopen the run that training created, so evaluation logs into the same run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    _connect(experiment)
    try:
        mlflow.get_run(run_id)
    except MlflowException:
        raise TrackingError(
            f"MLflow run {run_id} (training of {run_name or 'this run'}) is not in "
            f"{tracking_uri()}; retrain with `dvc repro -f train@{run_name or '<run>'}`"
        ) from None
    with mlflow.start_run(run_id=run_id) as active, _status_on_error():
        yield active


@contextmanager
def _status_on_error() -> Iterator[None]:
    import mlflow

    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException as exc:
        mlflow.set_tag("deepfit.error", f"{type(exc).__name__}: {exc}"[:5000])
        raise


def _param_value(value: Any) -> Any:
    # MLflow params are strings; keep lists readable and None explicit.
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) if value else "[]"
    return "null" if value is None else value

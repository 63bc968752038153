"""MLflow tracking: where the store is, one run per deepfit run execution, tags and resumption.

Also what keeps the store truthful when things go wrong: a quick reachability check of a
tracking server, one writer at a time while a fresh sqlite store is created, runs of killed
processes closed as KILLED, and failed DVC experiments recorded as FAILED runs.
MLflow is imported inside functions: stages validate params before paying for the import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfit.outputs import file_lock, pid_alive

if TYPE_CHECKING:
    from mlflow.entities import Run

    from deepfit.config import RunConfig

log = logging.getLogger(__name__)

# DVC runs queued experiments in full copies of the repository below this folder; their
# results must land in the user's store, not in a copy that DVC deletes afterwards.
_EXPS_TMP = os.path.join(".dvc", "tmp", "exps")
_VERSIONED = ("tensorflow-cpu", "keras", "mlflow", "dvc", "numpy", "deepfit")
HOST = socket.gethostname()
# Seconds a tracking server gets to answer the reachability check (MLflow's own HTTP retries
# would take about four minutes to give up on a server that is down).
REACH_TIMEOUT = 3.0
# Seconds a stage keeps retrying a tracking server that stopped answering mid-run before it
# fails (DEEPFIT_TRACKING_TIMEOUT); MLflow's own default is about four minutes.
TRACKING_TIMEOUT = 30
# Tells MLflow's UI to open the experiment on its training (not GenAI) view.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
_CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
_OPENED: list[str] = []  # MLflow runs this process opened or reopened


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
    """Tags that identify a run everywhere: names, git commit, DVC experiment, versions, and the
    process that writes it (so a later stage can tell that the process is gone)."""
    return identity_tags(run.name, run.model, run.dataset)


def identity_tags(name: str, model: str, dataset: str) -> dict[str, str]:
    """``run_tags`` from the names alone (also usable when params.yaml did not validate)."""
    commit = git_commit()
    tags = {
        "deepfit.run": name,
        "deepfit.model": model,
        "deepfit.dataset": dataset,
        "mlflow.source.git.commit": commit,
        "git_commit": commit,
    }
    exp_name = os.environ.get("DVC_EXP_NAME")
    if exp_name:
        tags["dvc_exp_name"] = exp_name
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")  # the commit the experiment started from
    if baseline:
        tags["dvc_exp_baseline"] = baseline
    tags.update({f"version.{k}": v for k, v in library_versions().items()})
    tags.update(process_tags())
    return tags


def process_tags() -> dict[str, str]:
    """Host, pid and the pid's start time (a reused pid is not mistaken for the writer)."""
    tags = {"deepfit.host": HOST, "deepfit.pid": str(os.getpid())}
    started = process_start(os.getpid())
    if started:
        tags["deepfit.pid_start"] = started
    return tags


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None where unknown."""
    try:  # Linux: field 22 of /proc/<pid>/stat, after the parenthesised command name
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _writer_alive(tags: Mapping[str, str]) -> bool:
    pid = int(tags["deepfit.pid"])
    if not pid_alive(pid):
        return False
    recorded, current = tags.get("deepfit.pid_start"), process_start(pid)
    return not (recorded and current and recorded != current)


def mlflow_run_name(run_name: str) -> str:
    """Readable MLflow run name: ``cnn``, or ``cnn@<dvc exp>`` inside a DVC experiment."""
    exp_name = os.environ.get("DVC_EXP_NAME")
    return f"{run_name}@{exp_name}" if exp_name else run_name


def check_reachable(uri: str | None = None, timeout: float = REACH_TIMEOUT) -> None:
    """Raise TrackingError within ``timeout`` seconds when an HTTP tracking server is down.

    Any HTTP answer counts as up (also 401/404 from a proxy); only a refused or timed-out
    connection counts as down. Other stores (sqlite, file) are not checked.
    """
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):
            return  # it answered; MLflow's own TLS settings decide the rest
        raise TrackingError(
            f"MLFLOW_TRACKING_URI={uri}: tracking server not reachable ({reason}); start it, "
            "or unset MLFLOW_TRACKING_URI to log to mlflow.db at the repository root"
        ) from None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """One process at a time in here per sqlite store: MLflow creates the tables of a new store
    on first use, and two processes doing so at once fail half-way."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///"))
    with file_lock(path.with_name(f"{path.name}-lock")):
        yield


def connect(experiment: str) -> Any:
    """Point MLflow at the store and ``experiment`` (created if new); return the experiment."""
    return _connect(experiment)


def _connect(experiment: str) -> Any:
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    configure_http()
    # MLflow's asynchronous logging thread blocks up to a second on an empty queue before it
    # sees a flush; with a buffer it waits on the flush itself (and writes what came within the
    # second as one batch). Without it, the flushes at the end of a fit, at end_run and at exit
    # cost a stage about 2 s.
    os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")
    check_reachable(uri)
    with _store_lock(uri):
        mlflow.set_tracking_uri(uri)
        location = (repo_root() / "mlartifacts").as_uri()
        if uri.startswith("sqlite:///"):
            relocate_artifacts(Path(uri.removeprefix("sqlite:///")), location)
        if (
            uri.startswith(("sqlite:", "file:"))
            and mlflow.get_experiment_by_name(experiment) is None
        ):
            # Pin artifacts to the repo root: MLflow's default is relative to the working
            # directory, which for a queued DVC experiment is a copy that DVC deletes afterwards.
            with contextlib.suppress(MlflowException):  # created meanwhile by a parallel stage
                mlflow.create_experiment(experiment, artifact_location=location)
        found = mlflow.set_experiment(experiment)
    _tag_experiment(uri, found)
    close_pending(uri)
    close_orphans(found.experiment_id)
    return found


def _tag_experiment(uri: str, experiment: Any) -> None:
    """Set EXPERIMENT_KIND once; a parallel stage may set it at the same moment (PostgreSQL then
    refuses the second insert), which is as good."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(uri)
    for key, value in EXPERIMENT_KIND.items():
        if experiment.tags.get(key) == value:
            continue
        try:
            client.set_experiment_tag(experiment.experiment_id, key, value)
        except MlflowException:
            if client.get_experiment(experiment.experiment_id).tags.get(key) != value:
                raise


def relocate_artifacts(db: Path, location: str) -> list[str]:
    """Point a moved or copied project's sqlite store at its own ``mlartifacts/``.

    MLflow stores absolute artifact locations; after ``mv proj proj2`` (or a copy) they still
    name the old folder, so new runs would write there. Locations under another folder's
    ``mlartifacts`` are rewritten to ``location`` (the repository root's, also inside a queued DVC
    experiment's copy). Returns the old prefixes that were rewritten.
    """
    import sqlite3

    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as conn, conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if "experiments" not in tables:
            return []
        rows = conn.execute("SELECT artifact_location FROM experiments").fetchall()
        stale = sorted(
            {loc for (loc,) in rows if _stale_location(loc, location)}, key=len, reverse=True
        )
        for old in stale:
            for table, column in _LOCATION_COLUMNS:
                if table in tables:
                    conn.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE substr({column}, 1, ?) = ?",
                        (location, len(old) + 1, len(old), old),
                    )
            log.warning("the project moved: MLflow artifacts now go to %s (was %s)", location, old)
    return stale


# Columns of MLflow's sqlite schema that hold artifact locations (runs, logged models, versions).
_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)


def _stale_location(found: str | None, location: str) -> bool:
    # Only deepfit's own layout (<root>/mlartifacts) is rewritten; a location a user chose stays.
    return (
        bool(found)
        and found.startswith("file:")
        and found.endswith("/mlartifacts")
        and (found != location)
    )


def configure_http(timeout: float | None = None) -> int:
    """Bound MLflow's HTTP retries to about ``timeout`` seconds (DEEPFIT_TRACKING_TIMEOUT,
    default 30) for a server that stops answering; MLflow variables already set win.

    urllib3 sleeps 0, 2, 4, 8, 16 s between retries with backoff factor 1: five retries wait
    about 30 s. Returns the number of retries."""
    if timeout is None:
        raw = os.environ.get("DEEPFIT_TRACKING_TIMEOUT", str(TRACKING_TIMEOUT))
        try:
            timeout = float(raw)
        except ValueError:
            raise TrackingError(
                f"DEEPFIT_TRACKING_TIMEOUT={raw!r}: expected seconds, e.g. 30"
            ) from None
    retries = 1
    while 2 ** (retries + 1) - 2 <= timeout:
        retries += 1
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(5, round(timeout))))
    return retries


def log_datasets(manifest: Mapping[str, Any], directory: Path) -> None:
    """The prepared splits as MLflow inputs of the active run: name = dataset, digest = the
    split file's sha256 (first 32 hex digits; MLflow keeps 36 characters), source = the file
    under ``directory``, context = training/validation/testing."""
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.exceptions import MlflowException

    for split, info in manifest["splits"].items():
        # An npz split is one file; an npy split (images) one file per array: name its inputs.
        entry = info["files"]["x"] if info.get("format") == "npy" else info
        source = LocalArtifactDatasetSource(str(directory / entry["file"]))
        dataset = MetaDataset(source, name=manifest["dataset"], digest=entry["sha256"][:32])
        tags = {"deepfit.sha256": entry["sha256"], "deepfit.samples": str(info["samples"])}
        try:
            mlflow.log_input(dataset, context=_CONTEXTS.get(split, split), tags=tags)
        except MlflowException:
            # Two runs logging the same new dataset at once: MLflow's SQL store checks, then
            # inserts, and PostgreSQL refuses the second insert. Now it exists: link it.
            time.sleep(0.5)
            mlflow.log_input(dataset, context=_CONTEXTS.get(split, split), tags=tags)


def close_orphans(experiment_id: str) -> list[str]:
    """End as KILLED the RUNNING runs of this host whose writing process is gone (``kill -9``,
    power loss); return their ids. Runs of other hosts and untagged runs are left alone."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri())
    closed = []
    running = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    for found in running:
        tags = found.data.tags
        if tags.get("deepfit.host") != HOST or not tags.get("deepfit.pid", "").isdigit():
            continue
        if _writer_alive(tags):
            continue
        run_id = found.info.run_id
        client.set_tag(
            run_id,
            "deepfit.error",
            f"killed: process {tags['deepfit.pid']} on {HOST} ended without closing the run",
        )
        client.set_terminated(run_id, "KILLED")
        log.warning(
            "MLflow run %s (%s) was left RUNNING by a killed process; marked KILLED",
            run_id,
            found.info.run_name,
        )
        closed.append(run_id)
    return closed


def opened_runs() -> list[str]:
    """Ids of the MLflow runs this process opened or reopened."""
    return list(_OPENED)


@contextmanager
def start_run(
    run: RunConfig,
    experiment: str,
    params: Mapping[str, Any],
    *,
    name: str | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
) -> Iterator[Run]:
    """Open a new MLflow run for ``run`` with its params and tags.

    ``name`` replaces the run's name in the MLflow run name, ``tags`` are added, and ``nested``
    opens a child of the active run (a study's variants under the study's run);
    ``parent_run_id`` a child of that run, also one of another process (a search's workers),
    which must have called ``connect`` once.
    The ``with`` block ends the run as FINISHED, or FAILED/KILLED when the block raises, so a
    failing stage never leaves a run marked RUNNING.
    """
    import mlflow

    if not nested and parent_run_id is None:
        _connect(experiment)
    with mlflow.start_run(
        run_name=mlflow_run_name(name or run.name),
        tags={**run_tags(run), **(tags or {})},
        nested=nested,
        parent_run_id=parent_run_id,
    ) as active:
        _OPENED.append(active.info.run_id)
        mlflow.log_params({k: _param_value(v) for k, v in params.items()})
        log.info("MLflow run %s (%s) in %s", active.info.run_id, run.name, tracking_uri())
        with _status_on_error():
            yield active


def log_epoch_rows(rows: list[tuple[int, Mapping[str, float]]], run_id: str | None = None) -> None:
    """Per-epoch values ``[(step, {key: value}), ...]`` to the active (or given) run, in one
    ``log_batch`` request per 1000 values instead of one request per epoch."""

    import mlflow
    from mlflow.entities import Metric

    run_id = run_id or mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, step)
        for step, values in rows
        for key, value in values.items()
    ]
    client = mlflow.MlflowClient()
    for start in range(0, len(metrics), 1000):  # the REST API's limit per request
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


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
        _OPENED.append(run_id)
        mlflow.set_tags(process_tags())  # this process writes it now
        yield active


@contextmanager
def _status_on_error() -> Iterator[None]:
    import mlflow

    try:
        yield
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM through the stage's handler
        message = f"interrupted ({str(exc) or 'SIGINT'})"
        if not _defer_close("KILLED", message):
            mlflow.set_tag("deepfit.error", message)
            mlflow.end_run(status="KILLED")
        raise
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"[:5000]
        if _defer_close("FAILED", message):
            raise TrackingError(
                f"tracking server {tracking_uri()} stopped answering during the run (retried for "
                f"about {os.environ.get('DEEPFIT_TRACKING_TIMEOUT', TRACKING_TIMEOUT)} s, "
                "DEEPFIT_TRACKING_TIMEOUT); its MLflow run is closed as FAILED once the server "
                "is back; rerun then, training resumes after its last saved epoch"
            ) from None
        mlflow.set_tag("deepfit.error", message)
        raise


def _pending_dir() -> Path:
    return repo_root() / ".dvc" / "tmp" / "deepfit" / "pending-close"


def _defer_close(status: str, message: str) -> bool:
    """When the tracking server is down, remember to close the active run as ``status`` the
    next time it is reached (``close_pending``) and end it here without waiting; True if so."""
    import mlflow

    uri = tracking_uri()
    active = mlflow.active_run()
    if active is None or not uri.startswith(("http://", "https://")):
        return False
    try:
        check_reachable(uri)
        return False
    except TrackingError:
        pass
    run_id = active.info.run_id
    record = {"uri": uri, "run_id": run_id, "status": status, "error": message}
    folder = _pending_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run_id}.json").write_text(json.dumps(record))
    log.warning("tracking server %s is down: MLflow run %s will be closed later", uri, run_id)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",)}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # one quick try, no minutes of retries
    try:
        with contextlib.suppress(Exception):
            mlflow.end_run(status)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return True


def close_pending(uri: str) -> list[str]:
    """Close the runs that a stage left open because the server was down (see
    ``_defer_close``), now that ``uri`` answers; return their ids."""
    from mlflow.tracking import MlflowClient

    closed = []
    folder = _pending_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        record = json.loads(path.read_text())
        if record.get("uri") != uri:
            continue
        client = MlflowClient(uri)
        client.set_tag(record["run_id"], "deepfit.error", record["error"])
        client.set_terminated(record["run_id"], record["status"])
        path.unlink()
        log.warning(
            "closed MLflow run %s as %s (left open while the server was down)",
            record["run_id"],
            record["status"],
        )
        closed.append(record["run_id"])
    return closed


def record_failure(run_name: str, stage: str, message: str, raw: Any) -> str | None:
    """Inside a DVC experiment, record a stage failure that happened before any MLflow run was
    opened as a FAILED run ``<run>@<exp>`` with tag ``deepfit.error``; return its id.

    ``raw`` is params.yaml as parsed (it may not validate): it supplies the experiment, the
    run's model and dataset, and its settings as params, as far as they can be read. Outside
    DVC experiments nothing is written.
    """
    if not os.environ.get("DVC_EXP_NAME"):
        return None
    from mlflow.tracking import MlflowClient

    raw = raw if isinstance(raw, Mapping) else {}
    block = _mapping(_mapping(raw.get("runs")).get(run_name))
    section = _mapping(raw.get("mlflow")).get("experiment")
    experiment = section if isinstance(section, str) and section else "deepfit"
    tags = identity_tags(run_name, str(block.get("model", "?")), str(block.get("dataset", "?")))
    tags.update({"deepfit.error": message[:5000], "deepfit.stage": stage})
    found = _connect(experiment)
    client = MlflowClient(tracking_uri())
    created = client.create_run(found.experiment_id, run_name=mlflow_run_name(run_name), tags=tags)
    run_id = created.info.run_id
    for key, value in _raw_run_params(raw, block).items():
        client.log_param(run_id, key, str(_param_value(value))[:6000])
    client.set_terminated(run_id, "FAILED")
    log.info("recorded the failure as MLflow run %s (%s)", run_id, mlflow_run_name(run_name))
    return run_id


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _raw_run_params(raw: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
    # The same keys as a validated run logs (model, dataset, arch.*, train.*), as written.
    from deepfit.config import flatten, merge_train

    train = merge_train(_mapping(raw.get("train")), _mapping(block.get("train")))
    arch = {k: v for k, v in block.items() if k not in ("model", "dataset", "train")}
    nested = {k: block[k] for k in ("model", "dataset") if k in block}
    return flatten({**nested, "arch": arch, "train": train})


def _param_value(value: Any) -> Any:
    # MLflow params are strings; keep lists readable and None explicit.
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) if value else "[]"
    return "null" if value is None else value

"""Where a search's Optuna study lives and how workers share it.

A study sits in a database: by default a sqlite file under ``.dvc/tmp/deepfit/tuning/`` (one
machine), or any SQLAlchemy URL such as ``postgresql://...`` (workers on several machines).
Workers take the next trial under a lock (a file lock for sqlite, an advisory lock for
PostgreSQL), so the budget is never overshot. A trial whose worker died is failed and retried
once with the same values: a trial of this host whose process is gone at once, one of another
host through Optuna's heartbeat after ``GRACE_SECONDS``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfit import tracking
from deepfit.outputs import file_lock, one_line, pid_alive
from deepfit.tune import TuneError

if TYPE_CHECKING:
    import optuna

    from deepfit.config import Params, TuningConfig

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(".dvc") / "tmp" / "deepfit" / "tuning"
# Seconds to answer the reachability check of a database server (its drivers retry for longer).
REACH_TIMEOUT = 1.0
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30
# Times a trial whose worker died is run again with the same values before it stays FAILED.
MAX_RETRY = 2
_PORTS = {"postgresql": 5432, "mysql": 3306}
FINGERPRINT = "deepfit.fingerprint"
REPORTED = "deepfit.reported"
PARENT_RUN = "deepfit.mlflow_parent"


def resolve(url: str | None, name: str, root: Path | None = None) -> str:
    """The study's storage URL (default: the sqlite file of the search); a URL given is
    connected to once, so that a TuneError names what is wrong within about a second."""
    if url is None:
        folder = (root or Path.cwd()).resolve() / DEFAULT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / f'{name}.db'}"
    check_reachable(url)
    _pgpass(url, root or Path.cwd())
    open_storage(url).engine.dispose()
    return url


def _pgpass(url: str, root: Path) -> None:
    """The password of `deepfit server --db postgres`, for its ``optuna`` database: libpq reads
    the server's pgpass file (never a URL or an argument) unless PGPASSFILE names another."""
    import os

    from sqlalchemy.engine import make_url

    from deepfit.server import HOST, PG_USER, Paths

    parsed = make_url(url)
    if parsed.username != PG_USER or parsed.host not in (HOST, "localhost"):
        return  # another server: the user's own ~/.pgpass or PGPASSFILE
    found = Paths.for_repo(tracking.repo_root(root)).pgpass
    if found.is_file():
        os.environ.setdefault("PGPASSFILE", str(found))


def check_reachable(url: str) -> None:
    """Raise TuneError at once when the database of ``url`` cannot be reached."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise TuneError(
            f"--storage {url}: not a database URL (sqlite:///path or postgresql://user@host/db)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        folder = Path(parsed.database or "").parent
        if not parsed.database or not folder.is_dir():
            raise TuneError(f"--storage {url}: folder {folder} does not exist")
        return
    if backend not in _PORTS:
        raise TuneError(
            f"--storage {url}: unsupported database {backend!r}; use sqlite or postgresql"
        )
    address = (parsed.host or "localhost", parsed.port or _PORTS[backend])
    try:
        socket.create_connection(address, timeout=REACH_TIMEOUT).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TuneError(
            f"--storage {_hide_password(url)}: cannot reach {address[0]}:{address[1]} "
            f"({reason}); start the database or check the URL"
        ) from None


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats (a trial of a dead worker is failed and retried).

    The first open of a new database writes Optuna's schema; processes opening it at the same
    moment would each write it, and all but one fail. A sqlite file is opened under its lock
    file; a server database is opened once more when another process's schema got there first.
    """
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    quiet_optuna()
    try:
        if url.startswith("sqlite:///"):
            with file_lock(_lock_path(url)):
                return _rdb_storage(url)
        try:
            return _rdb_storage(url)
        except SQLAlchemyError as exc:
            if not (isinstance(exc, IntegrityError) or "already exists" in str(exc)):
                raise
            time.sleep(1.0)
            return _rdb_storage(url)
    except (SQLAlchemyError, OSError, ImportError) as exc:
        reason = one_line(exc).split(" (Background on this error")[0]
        raise TuneError(f"--storage {_hide_password(url)}: {reason[:300]}") from None


def _lock_path(url: str) -> Path:
    """The lock file beside the sqlite file of ``url``."""
    db = Path(url.removeprefix("sqlite:///"))
    return db.with_name(f"{db.name}.lock")


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    import optuna

    connect = {"timeout": 60} if url.startswith("sqlite") else {"connect_timeout": 3}
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs={"connect_args": connect, "pool_pre_ping": True},
        heartbeat_interval=HEARTBEAT_SECONDS,
        grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=_retry_callback(),
    )


def quiet_optuna() -> None:
    """Optuna's own INFO lines repeat what deepfit logs; its experimental warnings are noise."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # deepfit beats the heart itself around each trial it asks for (``heartbeat``).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def _retry_callback() -> Any:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def fingerprint(search: TuningConfig, params: Params, root: Path = Path()) -> str:
    """What makes a study's trials comparable: the search, the base run, seeds and data."""
    manifest = root / "data" / "prepared" / search.base.dataset / "manifest.json"
    data = json.loads(manifest.read_text()).get("splits") if manifest.is_file() else None
    blob = {
        "space": {k: p.model_dump() for k, p in search.space.items()},
        "fixed": search.fixed,
        "sampler": [search.sampler, search.seed],
        "pruner": search.pruner,
        "metric": search.metric,
        "run": search.trial_run({}).flat(),
        "seeds": [params.seeds.split, params.seeds.train],
        "data": data,
    }
    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_study(
    search: TuningConfig, storage: Any, stamp: str, join: bool
) -> tuple[optuna.Study, bool]:
    """Create, resume or reset the study; return it and whether it was resumed.

    A study with the same fingerprint resumes until its report is written; a reported one, or
    one made from other params, starts afresh (``join`` never resets: it fails instead)."""
    import optuna

    from deepfit.tune.space import grid_points, pruner, sampler

    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if search.name in names:
        study = load(search, storage)
        same = study.user_attrs.get(FINGERPRINT) == stamp
        if join and not same:
            raise TuneError(
                f"--join: study {search.name!r} in the storage was made from other "
                "params; run the same params.yaml on every machine"
            )
        if join or (same and (not study.user_attrs.get(REPORTED) or budget_left(study, search))):
            return study, True
        log.info(
            "%s: starting a fresh study (%s)",
            search.name,
            "search finished before" if same else "params changed",
        )
        optuna.delete_study(study_name=search.name, storage=storage)
    elif join:
        raise TuneError(
            f"--join: no study {search.name!r} in the storage yet; start it with "
            f"`deepfit tune {search.name} --storage URL` on one machine"
        )
    study = optuna.create_study(
        study_name=search.name,
        storage=storage,
        direction=search.direction,
        sampler=sampler(search, 0),
        pruner=pruner(search),
    )
    study.set_user_attr(FINGERPRINT, stamp)
    if search.sampler == "grid":
        for point in grid_points(search):
            study.enqueue_trial(point)
    return study, False


def load(search: TuningConfig, storage: Any) -> optuna.Study:
    """The search's existing study, with its sampler and pruner."""
    import optuna

    from deepfit.tune.space import pruner, sampler

    try:
        return optuna.load_study(
            study_name=search.name,
            storage=storage,
            sampler=sampler(search, 0),
            pruner=pruner(search),
        )
    except KeyError:
        raise TuneError(
            f"no study {search.name!r} in the storage; run `deepfit tune {search.name}` first"
        ) from None


def budget_used(study: optuna.Study) -> int:
    """Trials that count against the budget: all but those waiting and those retried."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in retried)


def budget_left(study: optuna.Study, search: TuningConfig) -> bool:
    """Whether another trial may start (a grid also stops when its points are used up)."""
    from optuna.trial import TrialState

    if search.sampler == "grid" and not study.get_trials(states=(TrialState.WAITING,)):
        return False
    return budget_used(study) < search.trials


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail (and queue for a retry) RUNNING trials whose worker is gone: at once for a worker
    of this host, after the heartbeat's grace period for one of another host."""
    import optuna
    from optuna.trial import TrialState

    storage, failed = study._storage, []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("deepfit.host") != tracking.HOST or _alive(attrs):
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            message = f"killed: worker {attrs.get('deepfit.pid')} ended during the trial"
            storage.set_trial_user_attr(trial._trial_id, "deepfit.error", message)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            _retry_callback()(study, storage.get_trial(trial._trial_id))
            failed.append(trial.number)
            log.warning("trial %d was left running by a dead worker: failed, retried", trial.number)
    optuna.storages.fail_stale_trials(study)
    return failed


def _alive(attrs: dict[str, Any]) -> bool:
    pid = attrs.get("deepfit.pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    recorded, current = attrs.get("deepfit.pid_start"), tracking.process_start(pid)
    return not (recorded and current and recorded != current)


def worker_attrs() -> dict[str, Any]:
    """Which process runs a trial (so a rerun can tell that it died)."""
    tags = tracking.process_tags()
    attrs: dict[str, Any] = {
        "deepfit.host": tags["deepfit.host"],
        "deepfit.pid": int(tags["deepfit.pid"]),
    }
    if "deepfit.pid_start" in tags:
        attrs["deepfit.pid_start"] = tags["deepfit.pid_start"]
    return attrs


def rdb(study: optuna.Study) -> Any:
    """The study's RDBStorage (Optuna wraps it in a cache that has neither URL nor engine)."""
    return getattr(study._storage, "_backend", study._storage)


@contextlib.contextmanager
def budget_lock(storage: Any, name: str) -> Iterator[None]:
    """One worker at a time counts the budget and takes the next trial."""
    url = str(storage.url)
    if url.startswith("sqlite:///"):
        with file_lock(_lock_path(url)):
            yield
    elif url.startswith("postgresql"):
        from sqlalchemy import text

        key = int(hashlib.sha256(f"deepfit-tune:{name}".encode()).hexdigest()[:15], 16)
        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    else:
        yield


@contextlib.contextmanager
def heartbeat(storage: Any, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every HEARTBEAT_SECONDS while it runs."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried next interval
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(HEARTBEAT_SECONDS):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

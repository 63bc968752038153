"""Team tracking: start and stop a real PostgreSQL and `mlflow server` on 127.0.0.1, by PID.

``deepfit server`` serves the repository's sqlite store (the default), a PostgreSQL cluster it
runs itself from ``.dvc/tmp/deepfit/postgres/`` (the system's ``initdb``/``pg_ctl``), or an
existing PostgreSQL given by URL. The database password is generated, kept only in a pgpass
file of mode 0600 that libpq reads (``PGPASSFILE``), and never appears in a URL, an argument
list, the output or a log. What was started is written to a state file, so that
``deepfit server stop`` stops exactly those processes, by PID.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from deepfit.outputs import pid_alive
from deepfit.tracking import process_start, repo_root

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # servers bind loopback only; README "Security" says how to share them
PG_USER = "deepfit"
PG_DATABASE = "mlflow"
PG_STUDIES = "optuna"  # the searches' Optuna studies (`deepfit tune --storage`): own tables
PG_OWNER = "postgres"  # initdb refuses root: as root the cluster runs as this user
POOL_SIZE, POOL_OVERFLOW = 10, 20  # database connections per server worker
START_TIMEOUT = 120.0  # seconds for `mlflow server` to answer /health (first start makes tables)
STOP_TIMEOUT = 30.0
INSTALL_HINT = "install PostgreSQL (apt-get install postgresql, brew install postgresql@15)"


class ServerError(RuntimeError):
    """A one-line error that names what to fix (exit status 2)."""


@dataclass(frozen=True)
class Paths:
    """Where a repository's server keeps its state, credentials, logs and cluster."""

    folder: Path

    @classmethod
    def for_repo(cls, root: Path) -> Paths:
        return cls(root / ".dvc" / "tmp" / "deepfit")

    @property
    def state(self) -> Path:
        return self.folder / "server.json"

    @property
    def pgpass(self) -> Path:
        return self.folder / "pgpass"

    @property
    def cluster(self) -> Path:
        return self.folder / "postgres"

    @property
    def postgres_log(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def mlflow_log(self) -> Path:
        return self.folder / "mlflow-server.log"


@dataclass(frozen=True)
class Options:
    """What ``deepfit server`` was asked for."""

    db: str = "sqlite"  # sqlite | postgres
    port: int = 5000
    database_url: str | None = None
    artifacts: str | None = None  # a folder or s3://bucket/prefix; default <repo>/mlartifacts
    workers: int = 2


# ---------------------------------------------------------------- start and stop


def start(options: Options, root: Path | None = None) -> dict[str, Any]:
    """Start the database (if asked) and `mlflow server` in the background; return the state.

    Everything started so far is stopped again when a later step fails.
    """
    root = repo_root(root)
    paths = Paths.for_repo(root)
    _refuse_running(paths)
    _check_port_free(options.port, "--port (PORT= for make)")
    paths.folder.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"url": f"http://{HOST}:{options.port}", "db": options.db}
    try:
        state["backend"], state["postgres"] = _backend(options, paths, root)
        if state["postgres"]:  # deepfit's own cluster: a database for the searches' studies
            state["studies"] = state["backend"].rsplit("/", 1)[0] + f"/{PG_STUDIES}"
        artifacts = options.artifacts or str(root / "mlartifacts")
        state["artifacts"] = artifacts
        state["mlflow"] = _start_mlflow(options, state["backend"], artifacts, paths)
        _write_state(paths, state)
        _wait_healthy(state, paths)
    except BaseException:
        _stop_state(state)
        paths.state.unlink(missing_ok=True)
        raise
    return state


def stop(root: Path | None = None) -> dict[str, Any] | None:
    """Stop what ``start`` started in this repository, by PID; None when nothing runs."""
    paths = Paths.for_repo(repo_root(root))
    state = read_state(paths)
    if state is None:
        return None
    _stop_state(state)
    paths.state.unlink(missing_ok=True)
    return state


def read_state(paths: Paths) -> dict[str, Any] | None:
    """The state file of a running server, or None."""
    try:
        return json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return None


def wait(state: dict[str, Any]) -> None:
    """Block until `mlflow server` ends (foreground mode); Ctrl-C and SIGTERM raise
    KeyboardInterrupt here so that the caller stops everything."""

    def _interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _interrupt)
    while _alive(state["mlflow"]):
        time.sleep(0.5)


def _refuse_running(paths: Paths) -> None:
    state = read_state(paths)
    if state is None:
        return
    if _alive(state.get("mlflow", {})):
        raise ServerError(
            f"a server already runs on {state['url']} (state in {paths.state}); "
            "stop it first with `deepfit server stop` (make server-stop)"
        )
    _stop_state(state)  # leftovers of a server whose mlflow died: its database
    paths.state.unlink(missing_ok=True)


def _stop_state(state: dict[str, Any]) -> None:
    mlflow_proc = state.get("mlflow")
    if mlflow_proc:
        _terminate(mlflow_proc, signal.SIGTERM, group=True)
    postgres = state.get("postgres")
    if postgres and postgres.get("pid"):
        # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected, data is flushed.
        _terminate(postgres, signal.SIGINT, group=False)


def _process(pid: int) -> dict[str, Any]:
    return {"pid": pid, "start": process_start(pid)}


def _alive(proc: dict[str, Any]) -> bool:
    """Whether the recorded process still runs (a reused PID is not mistaken for it)."""
    pid = proc.get("pid")
    if not pid or not pid_alive(pid):
        return False
    current = process_start(pid)
    if proc.get("start") and current and current != proc["start"]:
        return False
    try:  # a zombie has ended; it only waits for its parent
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _terminate(proc: dict[str, Any], sig: signal.Signals, *, group: bool) -> None:
    """Send ``sig`` to the recorded PID (its process group for `mlflow server`, whose workers
    share it), wait, then SIGKILL what is left."""
    if not _alive(proc):
        return
    pid = proc["pid"]
    send = os.killpg if group else os.kill
    try:
        send(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(proc) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(proc):
        log.warning("process %d did not stop within %.0fs; killing it", pid, STOP_TIMEOUT)
        try:
            send(pid, signal.SIGKILL)
        except ProcessLookupError:
            return


def _write_state(paths: Paths, state: dict[str, Any]) -> None:
    _write_private(paths.state, json.dumps(state, indent=2) + "\n")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file that only its owner can read (mode 0600 from the start)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- mlflow server


def _start_mlflow(options: Options, backend: str, artifacts: str, paths: Paths) -> dict:
    cmd = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--host", HOST, "--port", str(options.port), "--workers", str(options.workers)),
        *("--backend-store-uri", backend),
        *("--serve-artifacts", "--artifacts-destination", artifacts),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PGPASSFILE"] = str(paths.pgpass)  # libpq reads the password there
    # Each server worker answers requests from a thread pool; SQLAlchemy's default of 5 + 10
    # connections per worker made 4 concurrent writers wait 30 s for one and fail (the S2 row
    # of `make bench`). 2 workers x 30 stay well under PostgreSQL's 100 connections.
    env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] = str(POOL_SIZE)
    env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"] = str(POOL_OVERFLOW)
    with open(paths.mlflow_log, "ab") as out:
        # its own session: the PID is also the process group of its workers, and Ctrl-C in the
        # terminal reaches only deepfit, which stops the group in order
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    log.info("mlflow server (pid %d) starting on %s:%d", process.pid, HOST, options.port)
    return _process(process.pid)


def _wait_healthy(state: dict[str, Any], paths: Paths) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(state["mlflow"]):
            raise ServerError(f"mlflow server exited at start: {_last_line(paths.mlflow_log)}")
        try:
            with urllib.request.urlopen(f"{state['url']}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise ServerError(
        f"mlflow server did not answer within {START_TIMEOUT:.0f}s; see {paths.mlflow_log}"
    )


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else f"no output (log: {path})"


def _check_port_free(port: int, what: str) -> None:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            raise ServerError(
                f"port {port} on {HOST} is in use; choose another with {what}"
            ) from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- database


def _backend(options: Options, paths: Paths, root: Path) -> tuple[str, dict | None]:
    """The backend store URI (never with a password) and the PostgreSQL process we started."""
    if options.database_url:
        return external_backend(options.database_url, paths), None
    if options.db == "postgres":
        return local_backend(paths)
    if options.db == "sqlite":
        return f"sqlite:///{root / 'mlflow.db'}", None
    raise ServerError(f"--db: expected sqlite or postgres, not {options.db!r}")


def parse_database_url(url: str) -> SplitResult:
    """A ``postgresql://user:password@host:port/database`` URL, or a ServerError."""
    hint = "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ServerError(f"--database-url: unsupported scheme {parts.scheme!r}; {hint}")
    try:
        parts.port  # noqa: B018 - parsing the port raises on garbage
    except ValueError:
        raise ServerError(f"--database-url: the port is not a number; {hint}") from None
    if not parts.hostname or not parts.username or not parts.path.strip("/"):
        raise ServerError(f"--database-url: host, user and database are required; {hint}")
    return parts


def external_backend(url: str, paths: Paths) -> str:
    """Check an existing PostgreSQL given by URL; keep its password in the pgpass file only."""
    parts = parse_database_url(url)
    user, database = unquote(parts.username or ""), parts.path.strip("/")
    host, port = parts.hostname or "", parts.port or 5432
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None:
        _write_pgpass(paths, password, host=host, port=str(port), database=database, user=user)
    _check_login(host, port, user, database, paths, "--database-url")
    return f"postgresql+psycopg://{user}@{_host(host)}:{port}/{database}"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _write_pgpass(paths: Paths, password: str, **fields: str) -> None:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    entry = [fields.get(k, "*") for k in ("host", "port", "database", "user")]
    paths.folder.mkdir(parents=True, exist_ok=True)
    _write_private(paths.pgpass, ":".join([*map(escape, entry), escape(password)]) + "\n")


def _check_login(host: str, port: int, user: str, database: str, paths: Paths, what: str) -> None:
    """Connect once, so that a wrong password or database is one line now, not a traceback in
    the server's log later."""
    import psycopg

    os.environ["PGPASSFILE"] = str(paths.pgpass)
    try:
        psycopg.connect(
            host=host, port=port, user=user, dbname=database, connect_timeout=10
        ).close()
    except psycopg.OperationalError as exc:
        raise ServerError(
            f"{what}: {_login_problem(str(exc), host, port, user, database)}"
        ) from None


def _login_problem(message: str, host: str, port: int, user: str, database: str) -> str:
    if "password authentication failed" in message or "no password supplied" in message:
        return f"PostgreSQL refused user {user!r} (wrong user or password); fix them in the URL"
    if "does not exist" in message and "database" in message:
        return f"database {database!r} does not exist on {host}:{port}; create it (createdb)"
    if "refused" in message or "timeout" in message.lower():
        return f"no PostgreSQL answers on {host}:{port}; start it or fix the host and port"
    return " ".join(message.split())


def local_backend(paths: Paths) -> tuple[str, dict]:
    """Create (first time) and start the cluster under .dvc/tmp/deepfit/postgres/."""
    for program in ("initdb", "pg_ctl"):
        if shutil.which(program) is None:
            raise ServerError(
                f"{program} not found on PATH; {INSTALL_HINT}, add its bin folder to PATH, "
                "or pass --database-url postgresql://... of an existing server"
            )
    if not (paths.cluster / "PG_VERSION").exists():
        _initdb(paths)
    port = free_port()
    postgres = _pg_start(paths, port)
    try:
        _check_login(HOST, port, PG_USER, "postgres", paths, "PostgreSQL")
        _create_database(port)
    except BaseException:
        _terminate(postgres, signal.SIGINT, group=False)
        raise
    return f"postgresql+psycopg://{PG_USER}@{HOST}:{port}/{PG_DATABASE}", postgres


def _as_owner(cmd: list[str]) -> list[str]:
    """``cmd`` run as the cluster's owner: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        raise ServerError("running as root needs runuser (util-linux) to start PostgreSQL")
    return ["runuser", "-u", PG_OWNER, "--", *cmd]


def _owned(path: Path) -> None:
    """Give ``path`` to the cluster's owner when running as root."""
    if os.geteuid() != 0:
        return
    try:
        owner = pwd.getpwnam(PG_OWNER)
    except KeyError:
        raise ServerError(
            f"running as root: PostgreSQL refuses root and there is no user {PG_OWNER!r} to run "
            f"it as; create one (useradd --system {PG_OWNER}) or run as a normal user"
        ) from None
    os.chown(path, owner.pw_uid, owner.pw_gid)


def _run_owner(cmd: list[str], what: str) -> None:
    done = subprocess.run(_as_owner(cmd), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise ServerError(f"{what} failed: {lines[-1].strip() if lines else done.returncode}")


def _initdb(paths: Paths) -> None:
    """A new cluster with superuser ``deepfit``, a random password and password logins only."""
    paths.cluster.mkdir(mode=0o700, parents=True, exist_ok=True)
    _owned(paths.cluster)
    if subprocess.run(_as_owner(["test", "-w", str(paths.cluster)])).returncode != 0:
        raise ServerError(
            f"user {PG_OWNER} cannot write {paths.cluster}; let it reach the folder "
            "(chmod o+x on the folders above it) or run deepfit server from another folder"
        )
    password = secrets.token_urlsafe(24)
    _write_pgpass(paths, password, host=HOST, user=PG_USER)
    pwfile = paths.folder / f".pwfile-{os.getpid()}"
    _write_private(pwfile, password + "\n")
    _owned(pwfile)
    try:
        _run_owner(
            [
                *("initdb", "-D", str(paths.cluster), "-U", PG_USER, f"--pwfile={pwfile}"),
                *("--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"),
            ],
            "initdb",
        )
    except BaseException:
        shutil.rmtree(paths.cluster, ignore_errors=True)
        raise
    finally:
        pwfile.unlink(missing_ok=True)
    log.info("created PostgreSQL cluster %s", paths.cluster)


def _pg_start(paths: Paths, port: int) -> dict[str, Any]:
    """Start the cluster on 127.0.0.1:``port`` (TCP only, no Unix socket); its postmaster."""
    if not paths.pgpass.exists():
        raise ServerError(
            f"{paths.pgpass} (the cluster's password) is missing; remove {paths.cluster} to "
            "start with an empty database"
        )
    paths.postgres_log.touch()
    _owned(paths.postgres_log)
    settings = f"-c listen_addresses={HOST} -p {port} -c unix_socket_directories=''"
    _run_owner(
        [
            *("pg_ctl", "-D", str(paths.cluster), "-l", str(paths.postgres_log)),
            *("-o", settings, "-w", "-t", "60", "start"),
        ],
        f"pg_ctl start (log: {paths.postgres_log})",
    )
    pid = int((paths.cluster / "postmaster.pid").read_text().split()[0])
    log.info("PostgreSQL (pid %d) on %s:%d", pid, HOST, port)
    return {**_process(pid), "port": port, "data": str(paths.cluster)}


def _create_database(port: int) -> None:
    import psycopg

    with psycopg.connect(
        host=HOST, port=port, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        for name in (PG_DATABASE, PG_STUDIES):
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')

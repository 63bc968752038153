"""`deepfit server` with a real PostgreSQL: its mistakes, its credentials, what it listens on,
and stopping it.

The slow tests start a PostgreSQL cluster (initdb/pg_ctl; as root it runs as user postgres) and
`mlflow server` on free loopback ports in a temporary project, and stop everything by PID. A
missing component fails the tests; nothing is skipped. A queued sweep and other writers logging
to such a server at once are in test_sweep_e2e.py, PostgreSQL restarted under two writers in
test_postgres_restart.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import (
    ROOT,
    deepfit_cli,
    free_port,
    make_workdir,
    running,
    shared_folder,
    stage_env,
    tiny_params,
)


def _env() -> dict[str, str]:
    # An absolute PYTHONPATH: subprocesses run in other folders and must import this tree.
    return stage_env(PYTHONPATH=str(ROOT / "src"))


def _one_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepfit server: error: "), done.stderr
    return lines[0]


def _project(base: Path) -> Path:
    root = make_workdir(base, tiny_params())
    (root / ".dvc").mkdir(exist_ok=True)
    return root


# ---------------------------------------------------------------- bad input, no server


def test_malformed_database_url_is_one_line(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    cases = {
        "mysql://u:p@127.0.0.1/db": "unsupported scheme 'mysql'",
        "postgresql://127.0.0.1/db": "host, user and database are required",
        "postgresql://u:p@127.0.0.1:port/db": "the port is not a number",
    }
    for url, expected in cases.items():
        line = _one_error(deepfit_cli(root, "server", "--database-url", url, "--port", "1"))
        assert expected in line and "postgresql://USER:PASSWORD@HOST:PORT/DATABASE" in line


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _one_error(deepfit_cli(root, "server", "--db", "postgres", "--port", str(port)))
    assert f"port {port} on 127.0.0.1 is in use; choose another with --port" in line


def test_missing_initdb_is_one_line(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    env = _env()
    env["PATH"] = "/usr/bin:/bin"  # no /usr/local/bin: no PostgreSQL
    assert shutil.which("initdb", path=env["PATH"]) is None
    done = deepfit_cli(root, "server", "--db", "postgres", "--port", str(free_port()), env=env)
    line = _one_error(done)
    assert "initdb not found on PATH" in line and "apt-get install postgresql" in line
    assert not (root / ".dvc" / "tmp" / "deepfit" / "server.json").exists()


def test_help_loads_no_mlflow_or_tensorflow() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from deepfit.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['server', '--help'])\n"
        "print(sorted(m for m in ('mlflow', 'tensorflow', 'keras', 'psycopg') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


def test_makefile_rebuilds_a_venv_made_for_another_folder(tmp_path: Path) -> None:
    shutil.copy2(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("requirements.lock", "pyproject.toml"):
        (tmp_path / name).write_text("")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "deepfit"
    script.write_text("#!/somewhere/else/.venv/bin/python\n")
    moved = subprocess.run(
        ["make", "--no-print-directory", "-n", "setup"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert "-m venv --clear .venv" in moved.stdout, moved.stdout + moved.stderr
    script.write_text(f"#!{bin_dir}/python\n")
    (tmp_path / ".venv" / ".installed").touch()
    here = subprocess.run(
        ["make", "--no-print-directory", "-n", "setup"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert "--clear" not in here.stdout and "venv" not in here.stdout, here.stdout


# ---------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def team():
    """A project served by `deepfit server --db postgres --detach`."""
    base = shared_folder("deepfit-team-")
    root = _project(base / "repo")
    port = free_port()
    started = deepfit_cli(root, "server", "--db", "postgres", "--port", str(port), "--detach")
    state_file = root / ".dvc" / "tmp" / "deepfit" / "server.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"root": root, "url": f"http://127.0.0.1:{port}", "state": state, "out": started}
    finally:
        deepfit_cli(root, "server", "stop")
        for proc in (state.get("mlflow"), state.get("postgres")):
            if proc and running(proc["pid"]):  # stop failed: do not leave servers behind
                os.kill(proc["pid"], signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def _password(root: Path) -> str:
    line = (root / ".dvc" / "tmp" / "deepfit" / "pgpass").read_text().strip()
    return line.rsplit(":", 1)[1]


@pytest.mark.slow
def test_password_is_private_and_never_shown(team) -> None:
    folder = team["root"] / ".dvc" / "tmp" / "deepfit"
    password = _password(team["root"])
    assert len(password) >= 24
    for name in ("pgpass", "server.json"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600, name
    shown = [team["out"].stdout, team["out"].stderr]
    shown += [(folder / n).read_text() for n in ("server.json", "mlflow-server.log")]
    shown.append((folder / "postgres.log").read_text())
    for pid in (team["state"]["mlflow"]["pid"], team["state"]["postgres"]["pid"]):
        shown.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
        shown.append(Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace"))
    assert all(password not in text for text in shown)
    assert team["state"]["backend"].startswith("postgresql+psycopg://deepfit@127.0.0.1:")


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* shows them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(address)
    return found


@pytest.mark.slow
def test_both_servers_listen_on_loopback_only(team) -> None:
    mlflow_port = int(team["url"].rsplit(":", 1)[1])
    assert _listening(mlflow_port) == {"0100007F"}  # 127.0.0.1, nothing else
    assert _listening(team["state"]["postgres"]["port"]) == {"0100007F"}


@pytest.mark.slow
def test_wrong_credentials_are_one_line(team, tmp_path: Path) -> None:
    root = _project(tmp_path / "other")
    pg_port = team["state"]["postgres"]["port"]
    url = f"postgresql://deepfit:not-the-password@127.0.0.1:{pg_port}/mlflow"
    done = deepfit_cli(root, "server", "--database-url", url, "--port", str(free_port()))
    line = _one_error(done)
    assert "PostgreSQL refused user 'deepfit' (wrong user or password)" in line
    assert "not-the-password" not in line


@pytest.mark.slow
def test_stop_ends_both_servers_by_pid(team) -> None:
    state = team["state"]
    done = deepfit_cli(team["root"], "server", "stop")
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        running(state[k]["pid"]) for k in ("mlflow", "postgres")
    ):
        time.sleep(0.5)
    assert not running(state["mlflow"]["pid"]) and not running(state["postgres"]["pid"])
    assert not (team["root"] / ".dvc" / "tmp" / "deepfit" / "server.json").exists()
    assert _listening(int(team["url"].rsplit(":", 1)[1])) == set()
    assert deepfit_cli(team["root"], "server", "stop").returncode == 1


def test_copied_project_logs_into_its_own_artifacts(tmp_path: Path) -> None:
    """A project copied with its mlflow.db: new runs land in the copy's mlartifacts/, old runs'
    artifacts resolve there too; the original folder is not written."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from deepfit import tracking

    first = tmp_path / "first"
    (first / ".dvc").mkdir(parents=True)
    (first / "dvc.yaml").write_text("stages: {}\n")
    client = MlflowClient(f"sqlite:///{first / 'mlflow.db'}")
    location = (first / "mlartifacts").as_uri()
    experiment_id = client.create_experiment("deepfit", artifact_location=location)
    old_run = client.create_run(experiment_id).info.run_id
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    moved = tracking.relocate_artifacts(copy / "mlflow.db", (copy / "mlartifacts").as_uri())
    assert moved == [location]
    copied = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    assert copied.get_experiment(experiment_id).artifact_location == (copy / "mlartifacts").as_uri()
    assert copied.get_run(old_run).info.artifact_uri.startswith((copy / "mlartifacts").as_uri())
    assert client.get_run(old_run).info.artifact_uri.startswith(location)  # original untouched
    mlflow.set_tracking_uri(f"sqlite:///{copy / 'mlflow.db'}")
    with mlflow.start_run(experiment_id=experiment_id):
        mlflow.log_text("hello", "note.txt")
    assert (copy / "mlartifacts").is_dir() and not (first / "mlartifacts").exists()
    assert tracking.relocate_artifacts(copy / "mlflow.db", (copy / "mlartifacts").as_uri()) == []

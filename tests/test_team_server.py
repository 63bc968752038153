"""`deepfit server` with a real PostgreSQL, what MLflow shows a team, and writers at once.

The slow tests start a PostgreSQL cluster (initdb/pg_ctl; as root it runs as user postgres) and
`mlflow server` on free loopback ports in a temporary project, log to them from real train
stages and MLflow clients at the same time, and stop everything by PID. A missing component
fails the tests; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import ROOT, TINY_RUN, copy_tree, make_workdir, stage_env, tiny_params

SRC = str(ROOT / "src")
EPOCHS = 4  # of each concurrent train stage
LOGGED_EPOCHS = 60  # of each concurrent MLflow client


def _env(**extra: str) -> dict[str, str]:
    # An absolute PYTHONPATH: subprocesses run in other folders and must import this tree.
    return stage_env(PYTHONPATH=SRC, **extra)


def _deepfit(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "deepfit.cli", *args],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepfit server: error: "), done.stderr
    return lines[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _project(base: Path, runs: dict | None = None) -> Path:
    root = make_workdir(base, tiny_params(runs=runs, epochs=EPOCHS))
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
        line = _one_error(_deepfit(root, "server", "--database-url", url, "--port", "1"))
        assert expected in line and "postgresql://USER:PASSWORD@HOST:PORT/DATABASE" in line


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _one_error(_deepfit(root, "server", "--db", "postgres", "--port", str(port)))
    assert f"port {port} on 127.0.0.1 is in use; choose another with --port" in line


def test_missing_initdb_is_one_line(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    env = _env()
    env["PATH"] = "/usr/bin:/bin"  # no /usr/local/bin: no PostgreSQL
    assert shutil.which("initdb", path=env["PATH"]) is None
    done = _deepfit(root, "server", "--db", "postgres", "--port", str(_free_port()), env=env)
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
def team(prepared_digits: Path):
    """A project with runs a and b, served by `deepfit server --db postgres --detach`."""
    # pytest's temporary folders are private to root; the cluster's owner must reach its folder.
    base = Path(tempfile.mkdtemp(prefix="deepfit-team-"))
    base.chmod(0o755)
    root = _project(base / "repo", runs={"a": dict(TINY_RUN), "b": dict(TINY_RUN)})
    copy_tree(prepared_digits, root / "data" / "prepared" / "digits")
    port = _free_port()
    started = _deepfit(root, "server", "--db", "postgres", "--port", str(port), "--detach")
    state_file = root / ".dvc" / "tmp" / "deepfit" / "server.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"root": root, "url": f"http://127.0.0.1:{port}", "state": state, "out": started}
    finally:
        _deepfit(root, "server", "stop")
        for proc in (state.get("mlflow"), state.get("postgres")):
            if proc and _running(proc["pid"]):  # stop failed: do not leave servers behind
                os.kill(proc["pid"], signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
    line = _one_error(_deepfit(root, "server", "--database-url", url, "--port", str(_free_port())))
    assert "PostgreSQL refused user 'deepfit' (wrong user or password)" in line
    assert "not-the-password" not in line


LOGGER = """
import json, sys, time
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("deepfit")
latencies = []
with mlflow.start_run(run_name=sys.argv[2], tags={"deepfit.run": sys.argv[2]}) as run:
    print(run.info.experiment_id, run.info.run_id, file=sys.stderr)
    for step in range(1, int(sys.argv[3]) + 1):
        started = time.perf_counter()
        mlflow.log_metrics({"loss": 1.0 / step, "val_loss": 2.0 / step}, step=step)
        latencies.append(time.perf_counter() - started)
print(json.dumps(latencies))
"""


@pytest.mark.slow
def test_concurrent_stages_and_clients_lose_nothing(team) -> None:
    """Two real train stages and two MLflow clients logging epochs, all at once."""
    from mlflow.tracking import MlflowClient

    root, url = team["root"], team["url"]
    env = _env(MLFLOW_TRACKING_URI=url)
    # The experiment exists on a team's server; what is tested is concurrent logging (in 1 of 3
    # runs while all four processes also raced to create it, one client's run went missing).
    if MlflowClient(url).get_experiment_by_name("deepfit") is None:
        MlflowClient(url).create_experiment("deepfit")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "deepfit.stages.train", "--run", run],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for run in ("a", "b")
    ]
    procs += [
        subprocess.Popen(
            [sys.executable, "-c", LOGGER, url, name, str(LOGGED_EPOCHS)],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("client1", "client2")
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, (out or "")[-3000:] + (err or "")[-3000:]
    latencies = sorted(x for out, _ in outputs[2:] for x in json.loads(out.splitlines()[-1]))
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("deepfit")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    by_name = {r.info.run_name: r for r in runs}
    everywhere = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {"a", "b", "client1", "client2"} <= set(by_name), (
        [(r.info.run_name, r.info.experiment_id, r.info.status) for r in everywhere],
        [err for _, err in outputs[2:]],
    )
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    expected = {"a": EPOCHS, "b": EPOCHS, "client1": LOGGED_EPOCHS, "client2": LOGGED_EPOCHS}
    for name, epochs in expected.items():
        assert by_name[name].info.status == "FINISHED"
        for key in ("loss", "val_loss"):
            steps = [m.step for m in client.get_metric_history(by_name[name].info.run_id, key)]
            assert sorted(steps) == list(range(1, epochs + 1)), (name, key)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"\nepoch logging to the server: {len(latencies)} calls, p50 "
        f"{latencies[len(latencies) // 2] * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"
    )
    assert p95 < 2.0


@pytest.mark.slow
def test_training_run_shows_kind_and_datasets(team) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(team["url"])
    experiment = client.get_experiment_by_name("deepfit")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    run = client.search_runs([experiment.experiment_id], "tags.`deepfit.run` = 'a'")[0]
    manifest = json.loads((team["root"] / "data/prepared/digits/manifest.json").read_text())
    inputs = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset
        for i in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "validation", "testing"}
    for split, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
        assert inputs[context].name == "digits"
        assert inputs[context].digest == manifest["splits"][split]["sha256"][:32]
        assert manifest["splits"][split]["file"] in inputs[context].source


@pytest.mark.slow
def test_stop_ends_both_servers_by_pid(team) -> None:
    state = team["state"]
    done = _deepfit(team["root"], "server", "stop")
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        _running(state[k]["pid"]) for k in ("mlflow", "postgres")
    ):
        time.sleep(0.5)
    assert not _running(state["mlflow"]["pid"]) and not _running(state["postgres"]["pid"])
    assert not (team["root"] / ".dvc" / "tmp" / "deepfit" / "server.json").exists()
    assert _listening(int(team["url"].rsplit(":", 1)[1])) == set()
    assert _deepfit(team["root"], "server", "stop").returncode == 1


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

"""Shared helpers of the test suite (plain functions; fixtures live in conftest.py).

The repository root, a copy of the repository like a fresh clone, the real params.yaml shrunk
to tiny sizes, running a stage as DVC would, shell commands in a clean environment, and the
MLflow store of a copy. Test files import from here, never from each other.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON_BIN = str(Path(sys.executable).parent)

# Epochs of every run in the end-to-end copies of the pipeline.
EPOCHS = 2

# A run small enough to train in a second or two.
TINY_RUN = {"model": "fnn", "dataset": "digits", "units": [8], "dropout": 0.0}

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "deepfit tests",
    "GIT_COMMITTER_NAME": "deepfit tests",
    "GIT_AUTHOR_EMAIL": "tests@deepfit.invalid",
    "GIT_COMMITTER_EMAIL": "tests@deepfit.invalid",
}


# ---------------------------------------------------------------- params


def real_params() -> dict[str, Any]:
    """The repository's params.yaml as plain data (a fresh copy each call)."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def tiny_params(runs: dict[str, Any] | None = None, epochs: int = 2) -> dict[str, Any]:
    """The real params.yaml shrunk: ``runs`` only (default one tiny FNN), few epochs."""
    raw = real_params()
    raw["train"]["epochs"] = epochs
    raw["scorer"]["epochs"] = 1
    raw["datasets"]["adding"].update(length=10, train_size=64, val_size=32, test_size=32)
    raw["runs"] = copy.deepcopy(runs) if runs is not None else {"tiny": dict(TINY_RUN)}
    raw[
        "tuning"
    ] = {}  # its base runs are gone (dvc.yaml still needs the key); tests that search add their own
    return raw


def tiny_search(base: str = "tiny", trials: int = 3, **extra: Any) -> dict[str, Any]:
    """A search of a few trials over a tiny run's learning rate and width."""
    return {
        "base": base,
        "trials": trials,
        "sampler": {"name": "tpe", "seed": 1},
        "space": {
            "train.optimizer.learning_rate": {
                "type": "float",
                "low": 1e-3,
                "high": 1e-1,
                "log": True,
            },
            "units": {"type": "categorical", "choices": [[8], [16, 8]]},
        },
        **extra,
    }


def shrunk_params(epochs: int = EPOCHS) -> dict[str, Any]:
    """The real params.yaml with every run, shrunk for an end-to-end `dvc repro`: ``epochs``
    epochs everywhere, a short adding problem, the first 20,000 characters of the text corpus,
    a small toy translation, studies on 60 samples with two small variants, searches of two
    trials."""
    params = real_params()
    params["train"]["epochs"] = epochs
    params["scorer"]["epochs"] = epochs
    params["datasets"]["adding"].update(length=10, train_size=256, val_size=64, test_size=64)
    params["datasets"]["python_docs"]["max_characters"] = 20_000
    params["datasets"]["numbers_en_fr"].update(train_size=256, val_size=64, test_size=64)
    for run in params["runs"].values():
        run.get("train", {}).pop("epochs", None)
    for study in params.get("studies", {}).values():
        study["train_size"] = 60
        study["base"]["train"]["epochs"] = epochs
        study["variants"] = dict(list(study["variants"].items())[:2])
        for variant in study["variants"].values():
            if "units" in variant:
                variant["units"] = [min(u, 16) for u in variant["units"]]
    for search in params.get("tuning", {}).values():
        search["trials"] = 2
        search["fixed"] = {**search.get("fixed", {}), "train.epochs": epochs}
    return params


# The shared pipeline (conftest's `pipeline` fixture): shrunk_params() with every default run,
# plus a user's own image folder and CSV table, each with a small network on it.
CITIES = ["oslo", "paris", "rome"]
PICS = {"source": "images", "path": "pics", "image_size": [8, 8], "color_mode": "rgb"}
PIXEL_CLASSES = (40, 120, 200)  # brightness of class_0, class_1, class_2 of the image folder
PIX_EPOCHS = 20  # the image run learns its three brightness classes; early stopping off
PIPELINE_EXTRA_RUNS = {
    "pix": {
        "model": "cnn",
        "dataset": "pics",
        "filters": [4],
        "dense": [8],
        "dropout": 0.0,
        "train": {
            "epochs": PIX_EPOCHS,
            "batch_size": 8,
            "optimizer": {"name": "adam", "learning_rate": 1.0e-2},
            "early_stopping": {"enabled": False},
        },
    },
    "tab": {
        "model": "fnn",
        "dataset": "t",
        "units": [16],
        "dropout": 0.0,
        "train": {"batch_size": 16},
    },
}


# Default runs the shared pipeline leaves out, each the twin of one it keeps: rnn, lstm_adding
# and rnn_text differ from lstm, rnn_adding and lstm_text only in the recurrent cell (SimpleRNN
# and LSTM both still run); cnn runs the convolutional network the user's image folder (pix)
# runs, on the digits fnn reads. test_models trains and reloads every model on every input kind.
SHARED_PIPELINE_TWINS = ("rnn", "lstm_adding", "rnn_text", "cnn")
# test_studies runs the regularisation study itself, on its own digits
SHARED_PIPELINE_STUDIES = ("capacity", "activation")


def pipeline_params() -> dict[str, Any]:
    """The shared pipeline's params: shrunk_params() without the twin runs and one study, and
    with the runs on the user's own files."""
    params = shrunk_params()
    for name in SHARED_PIPELINE_TWINS:
        del params["runs"][name]
    params["studies"] = {name: params["studies"][name] for name in SHARED_PIPELINE_STUDIES}
    params["datasets"]["pics"] = dict(PICS)
    params["datasets"]["t"] = {
        "source": "csv",
        "path": "t.csv",
        "target": "label",
        "task": "classification",
        "missing": "impute",
    }
    params["runs"].update(copy.deepcopy(PIPELINE_EXTRA_RUNS))
    params["runs"]["lstm_text"]["train"]["sample_every"] = 1  # text samples at every epoch
    return params


def build_arch(name: str, spec: Any, seed: int = 0, **config: Any) -> Any:
    """An uncompiled model of architecture ``name`` for data ``spec`` (a ``DataSpec``), its
    config from ``config`` over the defaults, weights seeded by ``seed``."""
    import keras

    from deepfit.models import get_spec

    keras.utils.set_random_seed(seed)
    model_spec = get_spec(name)
    return model_spec.build(model_spec.config(**config), spec)


def compile_for(model: Any, spec: Any) -> None:
    """Compile with Adam and the loss of ``spec``'s task (a GAN: one Adam per network)."""
    import keras

    if hasattr(model, "generator"):
        model.compile(d_optimizer=keras.optimizers.Adam(), g_optimizer=keras.optimizers.Adam())
    elif spec.task == "classification":
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    else:
        model.compile(optimizer="adam", loss="mse")


def run_epochs(name: str) -> int:
    """The epochs every run of the shared pipeline trains for."""
    return PIX_EPOCHS if name == "pix" else EPOCHS


def mixed_frame(n: int = 120, seed: int = 0) -> Any:
    """A table with numeric (int, float), categorical and boolean columns; the label depends on
    all kinds."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(50, 10, n).round(2),
            "city": rng.choice(CITIES, n),
            "member": rng.choice([True, False], n),
        }
    )
    frame["label"] = np.where((frame.age > 45) ^ (frame.city == "rome") ^ frame.member, "yes", "no")
    return frame


def add_images(folder: Path, value: int, count: int, start: int = 0) -> None:
    """``count`` 8x8 RGB PNGs around brightness ``value`` (a class tells itself by it)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value + start)
    for i in range(start, start + count):
        pixels = np.clip(rng.normal(value, 10, size=(8, 8, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def build_pipeline(root: Path) -> None:
    """A committed copy of the repo where `dvc repro` of pipeline_params() has run, with the
    user's files in data/raw/ (10 PNGs per class, a 160-row CSV with one empty cell). Git, dvc
    and stages run in there with ``stage_env(**GIT_IDENTITY)``, what git_repo returns."""
    root.mkdir(parents=True)
    copy_repo(root)
    for c, value in enumerate(PIXEL_CLASSES):
        add_images(root / "data" / "raw" / "pics" / f"class_{c}", value, 10)
    frame = mixed_frame(160)
    frame.loc[4, "income"] = float("nan")  # imputed with the training median
    frame.to_csv(root / "data" / "raw" / "t.csv", index=False)
    params = pipeline_params()
    write_params(root, params)
    gone = [f"/{run}/" for run in SHARED_PIPELINE_TWINS]
    gone += [
        f"/studies/{name}." for name in real_params()["studies"] if name not in params["studies"]
    ]
    drop_top_level_plots(root, gone)
    env = git_repo(root)
    sh(["dvc", "repro"], root, env)
    commit_all(root, env, "dvc.lock and metrics")


def drop_top_level_plots(root: Path, naming: list[str]) -> None:
    """Remove the files whose path contains one of ``naming`` from dvc.yaml's top-level plots,
    as a user who removes a default run must (README, "Varying experiments")."""
    path = root / "dvc.yaml"
    pipeline = yaml.safe_load(path.read_text())
    kept = []
    for entry in pipeline["plots"]:
        name, props = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
        if isinstance(props, dict) and isinstance(props.get("y"), dict):  # several files
            props["y"] = {f: y for f, y in props["y"].items() if not any(n in f for n in naming)}
        if not any(n in name for n in naming):
            kept.append(entry)
    pipeline["plots"] = kept
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))


def copy_pipeline(source: Path, dest: Path) -> Path:
    """A copy of the shared pipeline's repository (git, DVC cache, outputs, MLflow store) for a
    test that changes it; the shared one stays as built."""
    shutil.copytree(source, dest, symlinks=True)
    return dest


def write_params(directory: Path, raw: dict[str, Any], name: str = "params.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---------------------------------------------------------------- processes


def stage_env(**extra: str) -> dict[str, str]:
    """The environment a stage gets from DVC, without the caller's MLflow/DVC settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{PYTHON_BIN}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


def run_stage(
    cwd: Path, stage: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m deepfit.stages.<stage> args`` as DVC would."""
    return subprocess.run(
        [sys.executable, "-m", f"deepfit.stages.{stage}", *args],
        cwd=cwd,
        env=env or stage_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_line(done: subprocess.CompletedProcess, stage: str) -> str:
    """The stage's one error line (TensorFlow's own start-up lines on stderr are ignored)."""
    ours = [line for line in done.stderr.splitlines() if line.startswith(f"deepfit {stage}:")]
    assert len(ours) == 1, done.stderr[-3000:]
    assert done.stderr.rstrip().endswith(ours[0]), done.stderr[-3000:]  # the last word
    return ours[0]


def sh(
    cmd: list[str], cwd: Path, env: dict[str, str], ok: bool = True, timeout: float | None = None
) -> str:
    """Run ``cmd``; it must succeed (or, with ``ok=False``, fail). Returns stdout and stderr
    together."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert (done.returncode == 0) == ok, (
        f"{' '.join(cmd)}: exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return output


def tool(name: str) -> str:
    """The path of a console script of this environment (``deepfit``, ``mlflow``, ``dvc``)."""
    return str(Path(PYTHON_BIN) / name)


# ---------------------------------------------------------------- files and copies


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with size and mtime: equal snapshots mean nothing was written."""
    return {
        str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def prepare_refuses(root: Path, dataset: str, monkeypatch: Any, capsys: Any) -> str:
    """Run the prepare stage's ``main`` for ``dataset`` in ``root``; it must exit 2 and write
    nothing. Returns its last stderr line (the one-line error)."""
    from deepfit.stages import prepare as prepare_stage

    before = snapshot(root)
    monkeypatch.chdir(root)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    with pytest.raises(SystemExit) as stopped:
        prepare_stage.main(["--dataset", dataset])
    assert stopped.value.code == 2
    assert snapshot(root) == before
    assert not (root / "data" / "prepared" / dataset).exists()
    return capsys.readouterr().err.splitlines()[-1]


def make_workdir(directory: Path, raw: dict[str, Any]) -> Path:
    """A folder that stages run in: params.yaml, a dvc.yaml marking the root, data/raw/."""
    directory.mkdir(parents=True, exist_ok=True)
    write_params(directory, raw)
    (directory / "dvc.yaml").write_text("stages: {}\n")
    (directory / "data" / "raw").mkdir(parents=True, exist_ok=True)
    return directory


def copy_tree(source: Path, dest: Path) -> None:
    shutil.copytree(source, dest, dirs_exist_ok=True)


def copy_repo(dest: Path) -> None:
    """The repository's files that git sees, without outputs and tests: like a fresh clone."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if not (ROOT / rel).is_file() or rel.startswith(("reports/", "dvc.lock", "tests/")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def git_repo(dest: Path, env_extra: dict[str, str] | None = None) -> dict[str, str]:
    """Make ``dest`` (a copy) a git repository with one commit of everything in it.

    Returns the environment to run git, dvc and stages in there: no MLflow/DVC settings of the
    caller, a git identity that does not depend on the host (``dvc exp run`` commits)."""
    env = stage_env(**GIT_IDENTITY, **(env_extra or {}))
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.name", env["GIT_AUTHOR_NAME"]],  # DVC's own git backend reads
        ["git", "config", "user.email", env["GIT_AUTHOR_EMAIL"]],  # config, not the env vars
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "init"],
    ):
        sh(cmd, dest, env)
    return env


def commit_all(root: Path, env: dict[str, str], message: str) -> None:
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", message], root, env)


def tiny_repo(dest: Path, runs: list[str], env_extra: dict[str, str] | None = None) -> dict:
    """A committed copy of the repo whose pipeline trains only ``runs`` for EPOCHS epochs.

    ``dvc repro`` has run and its dvc.lock is committed; returns the environment to use.
    """
    dest.mkdir(parents=True)
    copy_repo(dest)
    params = shrunk_params()
    params["runs"] = {name: params["runs"][name] for name in runs}
    used = {run["dataset"] for run in params["runs"].values()} | {params["scorer"]["dataset"]}
    params["datasets"] = {k: v for k, v in params["datasets"].items() if k in used}
    if "studies" in params:
        params["studies"] = {}  # they depend on `train`: every optimizer change would rerun them
    if "tuning" in params:
        params["tuning"] = {}  # the same
    if "fnn" in runs:
        params["runs"]["fnn"]["activation"] = "sigmoid"  # no sweep point equals the baseline
    write_params(dest, params)
    env = git_repo(dest, env_extra)
    sh(["dvc", "repro"], dest, env)
    commit_all(dest, env, "dvc.lock and metrics")
    return env


# ---------------------------------------------------------------- MLflow


def mlflow_client(root: Path) -> Any:
    """An MLflow client on the sqlite store at ``root`` (a copy or a stage folder)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def runs_named(root: Path, run: str) -> list[Any]:
    """MLflow runs of deepfit run ``run`` in the store at ``root``, newest first."""
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("deepfit")
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`deepfit.run` = '{run}'",
        order_by=["attributes.start_time DESC"],
    )


# ---------------------------------------------------------------- servers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shared_folder(prefix: str) -> Path:
    """A new temporary folder that other users may enter (mode 0755). pytest's folders are
    private, and deepfit's PostgreSQL cluster runs as user postgres when the tests run as root.
    The caller removes it."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    return base


def deepfit_cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``deepfit ARGS`` in ``cwd``, importing this tree (absolute PYTHONPATH; cwd is elsewhere)."""
    return subprocess.run(
        [sys.executable, "-m", "deepfit.cli", *args],
        cwd=cwd,
        env=env or stage_env(PYTHONPATH=str(ROOT / "src")),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def running(pid: int) -> bool:
    """Process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# `python -c MLFLOW_LOGGER URL NAME EPOCHS`: an MLflow client that logs loss and val_loss for
# steps 1..EPOCHS into run NAME of experiment deepfit, one request per step, as fast as it can.
MLFLOW_LOGGER = """
import sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("deepfit")
with mlflow.start_run(run_name=sys.argv[2], tags={"deepfit.run": sys.argv[2]}):
    for step in range(1, int(sys.argv[3]) + 1):
        mlflow.log_metrics({"loss": 1.0 / step, "val_loss": 2.0 / step}, step=step)
"""

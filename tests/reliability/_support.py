"""Shared helpers of the reliability tests: tiny params, stage subprocesses, file snapshots."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PYTHON_BIN = str(Path(sys.executable).parent)

# A run small enough to train in a second or two.
TINY_RUN = {"model": "fnn", "dataset": "digits", "units": [8], "dropout": 0.0}


def tiny_params(runs: dict[str, Any] | None = None, epochs: int = 2) -> dict[str, Any]:
    """The real params.yaml shrunk: ``runs`` only (default one tiny FNN), few epochs."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["epochs"] = epochs
    raw["scorer"]["epochs"] = 1
    raw["datasets"]["adding"].update(length=10, train_size=64, val_size=32, test_size=32)
    raw["runs"] = copy.deepcopy(runs) if runs is not None else {"tiny": dict(TINY_RUN)}
    return raw


def write_params(directory: Path, raw: dict[str, Any], name: str = "params.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


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


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with size and mtime: equal snapshots mean nothing was written."""
    return {
        str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


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


def mlflow_client(root: Path) -> Any:
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

"""Raw data changes are tracked: the real `dvc repro` in a copy of the repository reruns
prepare@<dataset> and everything after it when an image is added under data/raw/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def copy_repo(dest: Path) -> None:
    """The files git sees, without outputs and tests: like a fresh clone."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if not (ROOT / rel).is_file() or rel.startswith(("reports/", "dvc.lock", "tests/")):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)


def sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", log))


def add_images(folder: Path, value: int, count: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value + start)
    for i in range(start, start + count):
        pixels = np.clip(rng.normal(value, 10, size=(8, 8, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def test_adding_an_image_reruns_prepare_and_its_downstream(tmp_path):
    repo = tmp_path / "repo"
    copy_repo(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"] = {
        "digits": params["datasets"]["digits"],  # the GAN scorer's dataset
        "pics": {"source": "images", "path": "pics", "image_size": [8, 8]},
    }
    run = {"model": "cnn", "dataset": "pics", "filters": [4], "dense": [8]}
    params["runs"] = {"pix": {**run, "train": {"batch_size": 8}}}
    params["train"]["epochs"] = 1
    params["scorer"]["epochs"] = 1
    params["studies"] = {}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for c, value in enumerate((40, 200)):
        add_images(repo / "data" / "raw" / "pics" / f"class_{c}", value, 10)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(GIT_AUTHOR_NAME="t", GIT_COMMITTER_NAME="t")
    env.update(GIT_AUTHOR_EMAIL="t@t.invalid", GIT_COMMITTER_EMAIL="t@t.invalid")
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
        sh(cmd, repo, env)
    sh(["git", "commit", "-qm", "init"], repo, env)
    first = ran(sh(["dvc", "repro"], repo, env))
    assert {"prepare@pics", "train@pix", "evaluate@pix"} <= first

    add_images(repo / "data" / "raw" / "pics" / "class_1", 200, 1, start=10)
    assert "prepare@pics" in sh(["dvc", "status"], repo, env)
    second = ran(sh(["dvc", "repro"], repo, env))
    # prepare@digits reruns too (data/raw/ is every prepare's dep) but writes the same files,
    # so the scorer it feeds does not retrain.
    assert {"prepare@pics", "train@pix", "evaluate@pix", "report"} <= second
    assert "train_scorer" not in second
    assert "up to date" in sh(["dvc", "status"], repo, env)

"""The DVC remote: `dvc push` from a repository that ran the pipeline, `dvc pull` into a fresh
`git clone` of the same commit gives byte-identical outputs, and there `dvc status` and
`dvc repro` run no stage.

The remote is a temporary folder set with `dvc remote modify --local` in both repositories (the
git-ignored .dvc/config.local), so the committed default remote is neither used nor changed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from helpers import copy_pipeline, sh

pytestmark = pytest.mark.slow

OUTPUTS = ("data/prepared", "models", "reports")


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under the pipeline's output folders, by relative path."""
    found = {}
    for folder in OUTPUTS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _use_remote(root: Path, remote: Path, env: dict[str, str]) -> None:
    # The committed default remote is named `local`; only its URL changes, and only here.
    sh(["dvc", "remote", "modify", "--local", "local", "url", str(remote)], root, env)


def test_pull_into_a_fresh_clone_gives_identical_outputs_and_no_work(
    pipeline, tmp_path: Path
) -> None:
    first, remote, second = tmp_path / "first", tmp_path / "remote", tmp_path / "second"
    env = pipeline[1]
    copy_pipeline(pipeline[0], first)  # a committed repository whose `dvc repro` has run
    _use_remote(first, remote, env)
    pushed = sh(["dvc", "push"], first, env)
    assert re.search(r"\d+ files? pushed", pushed), pushed
    sh(["git", "diff", "--quiet", "--", ".dvc/config"], first, env)  # committed config as it was
    assert not (tmp_path / "deepfit-remote").exists()  # the default remote's folder: untouched

    sh(["git", "clone", "-q", str(first), str(second)], tmp_path, env)
    assert not (second / "models").exists()  # outputs are not in git
    _use_remote(second, remote, env)
    sh(["dvc", "pull"], second, env)

    expected, pulled = _hashes(first), _hashes(second)
    assert any(p.startswith("models/fnn/") for p in pulled)
    assert any(p.startswith("data/prepared/digits/") for p in pulled)
    assert sorted(pulled) == sorted(expected)  # every output, nothing else
    assert pulled == expected  # byte-identical

    assert "up to date" in sh(["dvc", "status"], second, env)
    log = sh(["dvc", "repro"], second, env)
    assert "Running stage" not in log, log[-3000:]
    assert not (second / "mlflow.db").exists()  # nothing trained, nothing logged

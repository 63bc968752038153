"""Fixtures shared by the whole suite; plain helpers are in helpers.py.

pytest's default (prepend) import mode puts this folder on ``sys.path`` before it collects any
test, so every test file, tests/reliability/ included, can ``from helpers import ...``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import copy_tree, make_workdir, run_stage, tiny_params


@pytest.fixture(scope="session")
def prepared_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/prepared/digits made once by the real prepare stage; tests copy it."""
    root = make_workdir(tmp_path_factory.mktemp("prepared"), tiny_params())
    done = run_stage(root, "prepare", "--dataset", "digits")
    assert done.returncode == 0, done.stderr
    return root / "data" / "prepared" / "digits"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty stage folder with the tiny params (one run, `tiny`)."""
    return make_workdir(tmp_path / "work", tiny_params())


@pytest.fixture
def ready_workdir(workdir: Path, prepared_digits: Path) -> Path:
    """``workdir`` with data/prepared/digits in place."""
    copy_tree(prepared_digits, workdir / "data" / "prepared" / "digits")
    return workdir

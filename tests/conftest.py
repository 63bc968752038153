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


# The files whose module fixtures run a whole pipeline, longest first (measured with
# `pytest --durations`). Each xdist worker takes one file at a time, in collection order: starting
# the longest ones first keeps one long file from running alone at the end of the suite.
LONGEST_FIRST = (
    "test_pipeline_e2e.py",
    "test_sweep_e2e.py",
    "test_serving.py",
    "test_tuning.py",
    "test_pipeline_faults.py",
    "test_language.py",
    "test_tracking_outage.py",
    "test_server_e2e.py",
    "test_images.py",
    "test_team_server.py",
    "test_dvc_remote.py",
    "test_pipeline_deps.py",
    "test_text_classification.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the files of LONGEST_FIRST first, in its order; the others after, as collected."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))

"""Fixtures shared by the whole suite; plain helpers are in helpers.py.

pytest's default (prepend) import mode puts this folder on ``sys.path`` before it collects any
test, so every test file, tests/reliability/ included, can ``from helpers import ...``.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest

from deepfit.outputs import file_lock
from helpers import (
    GIT_IDENTITY,
    build_pipeline,
    copy_tree,
    make_workdir,
    run_stage,
    stage_env,
    tiny_params,
)


@pytest.fixture(scope="session", autouse=True)
def _heavy_imports_frozen() -> None:
    """TensorFlow, Keras and MLflow imported once per test process with the garbage collector
    paused, then frozen, as every stage does (README, "Stage start-up"): the in-process model,
    training and evaluation tests ran in 62-64 s instead of 69-71 s."""
    gc.disable()
    try:
        import keras  # noqa: F401
        import mlflow  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()


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


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Path, dict]:
    """The shared pipeline (helpers.build_pipeline): built once per `pytest` invocation, by the
    first xdist worker that needs it, under a lock in the folder all workers share; the others
    wait for it. Tests read it, and copy it (helpers.copy_pipeline) to change anything.

    Returns the repository and the environment to run git, dvc and stages in it."""
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # pytest-of-<user>/pytest-<n>/popen-gw<i>: share pytest-<n>/
        shared = shared.parent
    root, done = shared / "pipeline" / "repo", shared / "pipeline" / "built"
    with file_lock(shared / "pipeline.lock"):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed in another worker
            build_pipeline(root)
            done.touch()
    return root, stage_env(**GIT_IDENTITY)


# Each xdist worker takes one test file at a time, in collection order. First the files that run
# long pipelines of their own, longest first (measured with `pytest --durations`), the one that
# builds the shared pipeline ahead; last the files that read or copy the shared pipeline, so that
# no worker waits for it while other work is left.
LONGEST_FIRST = (
    "test_pipeline_e2e.py",
    "test_sweep_e2e.py",
    "test_tuning.py",
    "test_pipeline_faults.py",
    "test_tracking_outage.py",
    "test_server_e2e.py",
    "test_team_server.py",
    "test_postgres_restart.py",
    "test_text_classification.py",
)
SHARED_PIPELINE_LAST = (
    "test_pipeline_new_image.py",
    "test_pipeline_changes.py",
    "test_serving.py",
    "test_dvc_remote.py",
    "test_pipeline_deps.py",
    "test_images.py",
    "test_language.py",
    "test_tables.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """LONGEST_FIRST first, in its order; SHARED_PIPELINE_LAST last; the others between."""
    first = {name: i for i, name in enumerate(LONGEST_FIRST)}
    last = {name: i for i, name in enumerate(SHARED_PIPELINE_LAST)}

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        if name in first:
            return 0, first[name]
        return (2, last[name]) if name in last else (1, 0)

    items.sort(key=rank)

"""What the real DVC makes of the stage graph's deps, in a copy of the shared pipeline (conftest's
`pipeline`: a committed repository whose `dvc repro` has run):

- every edit of params.yaml is validated, even of a key that no stage depends on: a real
  `dvc repro` fails with the usual one-line error naming the key (the `validate` stage);
- a new architecture file changes no existing stage; a run that uses it adds only its own
  stages (and the report).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import copy_pipeline, sh

pytestmark = pytest.mark.slow

BASE_RUN = "rnn_adding"


@pytest.fixture(scope="module")
def repo(pipeline, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root, env = pipeline
    return copy_pipeline(root, tmp_path_factory.mktemp("deps") / "repo"), env


@pytest.fixture
def pristine(repo):
    """The copy as committed after each test: params.yaml back, no new model file."""
    root, env = repo
    params = (root / "params.yaml").read_bytes()
    lock = (root / "dvc.lock").read_bytes()
    yield root, env
    (root / "params.yaml").write_bytes(params)
    (root / "src/deepfit/models/gru.py").unlink(missing_ok=True)
    assert (root / "dvc.lock").read_bytes() == lock
    assert _changed(root, env) == set()


def _changed(root: Path, env: dict[str, str]) -> set[str]:
    """The stages `dvc status` reports as changed."""
    return set(json.loads(sh(["dvc", "status", "--json"], root, env, timeout=300).strip() or "{}"))


def _failed_repro(root: Path, env: dict[str, str]) -> tuple[str, list[str]]:
    done = subprocess.run(
        ["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-4000:]
    ours = [line for line in output.splitlines() if re.match(r"deepfit \S+: error: ", line)]
    return output, ours


def test_the_copy_is_up_to_date(repo):
    root, env = repo
    assert _changed(root, env) == set()
    out = sh(["dvc", "repro"], root, env)
    assert "Running stage" not in out


def test_a_top_level_typo_fails_dvc_repro_in_one_line(pristine):
    root, env = pristine
    lock = (root / "dvc.lock").read_bytes()
    with (root / "params.yaml").open("a") as handle:
        handle.write("trian: {epochs: 5}\n")
    assert _changed(root, env) == {"validate"}  # the only stage that reads the whole file
    output, ours = _failed_repro(root, env)
    prefix = "deepfit validate: error: params.yaml: trian: unknown key; allowed keys: "
    assert len(ours) == 1 and ours[0].startswith(prefix), output[-4000:]
    allowed = set(ours[0].removeprefix(prefix).split(", "))
    assert {"seeds", "datasets", "train", "runs", "fit"} <= allowed
    assert "Running stage 'train@" not in output and "Running stage 'prepare@" not in output
    assert (root / "dvc.lock").read_bytes() == lock


def test_a_nested_typo_fails_dvc_repro_in_one_line(pristine):
    root, env = pristine
    lock = (root / "dvc.lock").read_bytes()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["runs"][BASE_RUN]["activaton"] = "relu"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output, ours = _failed_repro(root, env)
    # validate, or train@rnn_adding (it reads runs.rnn_adding) if DVC runs it first: one line
    line = re.compile(
        rf"deepfit (validate|train@{BASE_RUN}): error: params\.yaml: "
        rf"runs\.{BASE_RUN}\.activaton: unknown key; allowed keys: .*\bactivation\b.*"
    )
    assert len(ours) == 1 and line.fullmatch(ours[0]), output[-4000:]
    assert "Epoch 1" not in output  # refused before any training
    assert (root / "dvc.lock").read_bytes() == lock


def test_a_new_model_file_changes_nothing_until_a_run_uses_it(pristine):
    root, env = pristine
    models = root / "src" / "deepfit" / "models"
    text = (models / "rnn.py").read_text()
    assert text.count('name="rnn"') == 1
    (models / "gru.py").write_text(text.replace('name="rnn"', 'name="gru"'))
    assert _changed(root, env) == set()

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["runs"]["gru_adding"] = {**params["runs"][BASE_RUN], "model": "gru"}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # validate reruns on every edit of params.yaml; nothing depends on it
    assert _changed(root, env) == {
        "train@gru_adding",
        "evaluate@gru_adding",
        "report",
        "validate",
    }


def test_dvc_yaml_names_each_runs_own_architecture_file(repo):
    root, _ = repo
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for stage in ("train", "evaluate"):
        deps = stages[stage]["do"]["deps"]
        assert "src/deepfit/models/${item.model}.py" in deps, stage
        assert "src/deepfit/models" not in deps, stage  # not the whole package
    assert stages["validate"]["deps"][0] == "params.yaml"

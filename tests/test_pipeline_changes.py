"""End to end, continued: what DVC does in a copy of the shared pipeline (conftest's `pipeline`)
after its `dvc repro`: its own views, a second repro that does nothing, and `dvc exp run -S` that
reruns only the varied run's stages. A new image is test_pipeline_new_image.py.

Files of their own so that other xdist workers take them while test_pipeline_e2e.py reads.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from helpers import copy_pipeline, mlflow_client, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def changed(pipeline, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the shared pipeline, for the tests that run DVC and change it."""
    root, env = pipeline
    return copy_pipeline(root, tmp_path_factory.mktemp("changes") / "repo"), env


def test_dvc_views_work(changed):
    root, env = changed
    metrics = sh(["dvc", "metrics", "show", "--json"], root, env)
    assert "reports/metrics/pix.json" in metrics
    shown = subprocess.run(
        ["dvc", "plots", "show", "--json"], cwd=root, env=env, capture_output=True, text=True
    )
    plots = json.loads(shown.stdout)  # warnings, if any, go to stderr
    assert "reports/plots/pix/curves/loss.csv" in plots["data"]
    assert "reports/plots/fnn/eval/confusion.csv" in plots["data"]
    assert "reports/plots/pix/gradients/norms.csv" in plots["data"]
    assert not plots.get("errors"), plots.get("errors")


def test_second_repro_does_nothing(changed):
    root, env = changed
    out = sh(["dvc", "repro"], root, env)
    assert "Running stage" not in out
    assert "up to date" in out


def test_exp_run_reruns_only_the_varied_run(changed):
    root, env = changed  # committed as built: `dvc exp run` starts from that commit
    out = sh(["dvc", "exp", "run", "-S", "runs.pix.dropout=0.1"], root, env)
    ran = sorted(set(re.findall(r"Running stage '([^']+)'", out)))
    # validate reruns on every edit of params.yaml; nothing depends on it
    assert ran == ["evaluate@pix", "report", "train@pix", "validate"]
    shown = sh(["dvc", "exp", "show", "--json"], root, env)
    assert "0.1" in shown

    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("deepfit")
    varied = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`deepfit.run` = 'pix'"
    )
    named = [r for r in varied if "dvc_exp_name" in r.data.tags]
    assert len(named) == 1
    run = named[0]
    assert run.info.run_name == f"pix@{run.data.tags['dvc_exp_name']}"
    assert run.info.status == "FINISHED"
    assert run.data.params["arch.dropout"] == "0.1"

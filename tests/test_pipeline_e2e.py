"""End to end: the real `dvc repro` in a temporary copy of the repo on shrunk params.

Checks the metrics files, DVC's own views and the MLflow store through MLflow's client, that a
second repro does nothing, and that `dvc exp run -S` reruns only the varied run's stages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNS = ["fnn", "cnn", "rnn", "lstm", "rnn_adding", "lstm_adding", "gan"]
EPOCHS = 2
VERDICTS = {"underfit", "good", "overfit", "diverged"}

pytestmark = pytest.mark.slow


def _copy_repo(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if not (ROOT / rel).is_file() or rel.startswith(("reports/", "dvc.lock")):
            continue  # the copy starts with no outputs, as a fresh clone
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def _shrink(params_path: Path) -> None:
    params = yaml.safe_load(params_path.read_text())
    params["train"]["epochs"] = EPOCHS
    params["scorer"]["epochs"] = EPOCHS
    params["datasets"]["adding"].update(length=10, train_size=256, val_size=64, test_size=64)
    for run in params["runs"].values():
        run.get("train", {}).pop("epochs", None)
    for study in params.get("studies", {}).values():
        study["train_size"] = 60
        study["base"]["train"]["epochs"] = EPOCHS
        study["variants"] = dict(list(study["variants"].items())[:2])
        for variant in study["variants"].values():
            if "units" in variant:
                variant["units"] = [min(u, 16) for u in variant["units"]]
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


def _sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    repo = tmp_path_factory.mktemp("deepfit") / "repo"
    repo.mkdir()
    _copy_repo(repo)
    _shrink(repo / "params.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # `dvc exp run` commits experiments: give git an identity that does not depend on the host
    for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        env[var] = "deepfit tests"
    for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        env[var] = "tests@deepfit.invalid"
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.name", env["GIT_AUTHOR_NAME"]],  # DVC's own git backend reads
        ["git", "config", "user.email", env["GIT_AUTHOR_EMAIL"]],  # config, not the env vars
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "init"],
    ):
        _sh(cmd, repo, env)
    env["DEEPFIT_E2E_LOG"] = _sh(["dvc", "repro"], repo, env)
    return repo, env


def test_every_run_has_metrics_with_baselines(repo):
    root, _ = repo
    for name in RUNS:
        metrics = json.loads((root / "reports" / "metrics" / f"{name}.json").read_text())
        assert metrics["test"] and metrics["baseline"], name
        assert metrics["train"]["epochs"] == EPOCHS
    digits = json.loads((root / "reports/metrics/cnn.json").read_text())
    assert 0.0 <= digits["test"]["accuracy"] <= 1.0
    assert digits["baseline"]["svm"]["accuracy"] > 0.9  # the SVM baseline is a real one
    adding = json.loads((root / "reports/metrics/lstm_adding.json").read_text())
    assert adding["baseline"]["constant"]["mse"] > 0.1
    gan = json.loads((root / "reports/metrics/gan.json").read_text())
    assert gan["test"]["fid"] > gan["baseline"]["fid_real_vs_real"] >= 0
    summary = (root / "reports" / "summary.md").read_text()
    assert all(f"| {name} |" in summary for name in RUNS)
    assert "## Fit" in summary
    assert (root / "reports/figures/learning_curves.png").stat().st_size > 1000


def test_mlflow_store_has_one_finished_run_per_run_with_epoch_curves(repo):
    root, _ = repo
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deepfit")
    everything = client.search_runs([experiment.experiment_id])
    runs = [r for r in everything if "deepfit.study" not in r.data.tags]
    assert sorted(r.info.run_name for r in runs) == sorted(RUNS)
    for run in runs:
        name = run.info.run_name
        assert run.info.status == "FINISHED", name
        assert run.data.tags["deepfit.run"] == name
        assert len(run.data.tags["mlflow.source.git.commit"]) == 40
        assert "version.keras" in run.data.tags
        assert "train.optimizer.learning_rate" in run.data.params
        loss = "d_loss" if name == "gan" else "loss"
        for key in (loss, f"val_{loss}"):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == list(range(1, EPOCHS + 1)), (name, key)
        assert any(k.startswith("test.") for k in run.data.metrics), name
        assert run.data.tags["deepfit.fit.verdict"] in VERDICTS, name
        assert "fit.skill_gap" in run.data.metrics and "fit.best_epoch" in run.data.metrics
        grads = [k for k in run.data.metrics if k.startswith("grad_norm.")]
        assert grads, name
        steps = [m.step for m in client.get_metric_history(run.info.run_id, grads[0])]
        assert steps == list(range(1, EPOCHS + 1)), name
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
        assert "figures/evaluation" in artifacts and "figures/training" in artifacts


def test_every_run_has_a_fit_verdict_with_evidence(repo):
    root, _ = repo
    for name in RUNS:
        metrics = json.loads((root / "reports" / "metrics" / f"{name}.json").read_text())
        fit = metrics["fit"]
        assert fit["verdict"] in VERDICTS and fit["reasons"], name
        for key in ("best_epoch", "val_loss_best", "val_loss_last", "gap_best", "gap_last"):
            assert isinstance(fit[key], int | float), (name, key)
        assert metrics["gradients"]["layers"] >= 2, name
        info = json.loads((root / "reports" / "metrics" / f"{name}.run.json").read_text())
        assert len(info["mlflow"]["run_id"]) == 32 and info["train"]["seconds"] > 0, name
        rows = (root / "reports/plots" / name / "gradients/norms.csv").read_text().splitlines()
        assert rows[0] == "epoch,layer,norm" and len(rows) > EPOCHS, name


def test_studies_write_tables_figures_and_grouped_runs(repo):
    root, _ = repo
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deepfit")
    for study in ("capacity", "regularisation", "activation"):
        table = (root / "reports/studies" / f"{study}.md").read_text()
        verdicts = re.findall(r"\| \*\*(\w+)\*\* \|", table)
        assert len(verdicts) == 2 and set(verdicts) <= VERDICTS, study
        assert (root / "reports/figures/studies" / f"{study}.png").stat().st_size > 10_000
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`deepfit.study` = '{study}'"
        )
        assert len(runs) == 3, study  # the study's parent run and its two (shrunk) variants
        assert all(r.info.status == "FINISHED" for r in runs), study


def test_logged_model_loads_with_pyfunc(repo):
    root, _ = repo
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["deepfit"], filter_string="run_name = 'cnn'")
    model = mlflow.pyfunc.load_model(f"runs:/{run.iloc[0].run_id}/model")
    proba = np.asarray(model.predict(np.zeros((2, 8, 8, 1), dtype="float32")))
    assert proba.shape == (2, 10)


def test_dvc_views_work(repo):
    root, env = repo
    metrics = _sh(["dvc", "metrics", "show", "--json"], root, env)
    assert "reports/metrics/cnn.json" in metrics
    shown = subprocess.run(
        ["dvc", "plots", "show", "--json"], cwd=root, env=env, capture_output=True, text=True
    )
    plots = json.loads(shown.stdout)  # warnings, if any, go to stderr
    assert "reports/plots/cnn/curves/loss.csv" in plots["data"]
    assert "reports/plots/cnn/eval/confusion.csv" in plots["data"]
    assert "reports/plots/cnn/gradients/norms.csv" in plots["data"]
    assert not plots.get("errors"), plots.get("errors")


def test_second_repro_does_nothing(repo):
    root, env = repo
    out = _sh(["dvc", "repro"], root, env)
    assert "Running stage" not in out
    assert "up to date" in out


def test_exp_run_reruns_only_the_varied_run(repo):
    root, env = repo
    _sh(["git", "add", "-A"], root, env)
    _sh(["git", "commit", "-qm", "lock"], root, env)
    out = _sh(["dvc", "exp", "run", "-S", "runs.cnn.activation=tanh"], root, env)
    ran = sorted(set(re.findall(r"Running stage '([^']+)'", out)))
    assert ran == ["evaluate@cnn", "report", "train@cnn"]
    shown = _sh(["dvc", "exp", "show", "--json"], root, env)
    assert "tanh" in shown

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deepfit")
    varied = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`deepfit.run` = 'cnn'"
    )
    named = [r for r in varied if "dvc_exp_name" in r.data.tags]
    assert len(named) == 1
    run = named[0]
    assert run.info.run_name == f"cnn@{run.data.tags['dvc_exp_name']}"
    assert run.info.status == "FINISHED"
    assert run.data.params["arch.activation"] == "tanh"

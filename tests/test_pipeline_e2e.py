"""End to end: the real `dvc repro` of the shared pipeline (conftest's `pipeline`: shrunk params,
the default runs but three twins, a user's image folder and CSV table).

Checks the metrics and evidence files, the studies, and the MLflow store through MLflow's client.
What DVC does next in that repository (its views, a second repro, a new image, `dvc exp run -S`)
is in test_pipeline_changes.py, on a copy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import SHARED_PIPELINE_STUDIES, mlflow_client, run_epochs

RUNS = ["fnn", "lstm", "rnn_adding", "lstm_text", "seq2seq", "gan", "pix", "tab"]
VERDICTS = {"underfit", "good", "overfit", "diverged"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(pipeline) -> tuple[Path, dict[str, str]]:
    """The shared pipeline as built: read only."""
    return pipeline


def _json(root: Path, rel: str) -> dict:
    return json.loads((root / rel).read_text())


def test_every_run_has_metrics_with_baselines(repo):
    root, _ = repo
    assert sorted(p.name for p in (root / "reports/metrics").iterdir()) == sorted(
        f"{name}.json" for name in RUNS
    )  # the DVC metrics only: what differs between executions lives in reports/evidence
    for name in RUNS:
        metrics = _json(root, f"reports/metrics/{name}.json")
        assert set(metrics) == {"test", "baseline", "fit"}, name
        assert metrics["test"] and metrics["baseline"]["name"], name
        evidence = _json(root, f"reports/evidence/{name}.json")
        assert evidence["train"]["epochs"] == run_epochs(name), name
        baseline = metrics["baseline"]
        assert evidence["strongest_baseline"] == baseline["name"], name
        found = evidence["baselines"][baseline["name"]]
        shared = set(found) & set(baseline) - {"name"}
        assert shared and all(found[k] == baseline[k] for k in shared), name
        assert baseline["verdict"], name  # better / no significant difference / worse
    digits = _json(root, "reports/metrics/fnn.json")
    assert 0.0 <= digits["test"]["accuracy"] <= 1.0
    assert digits["baseline"]["accuracy"] > 0.9  # the strongest classical baseline is a real one
    adding = _json(root, "reports/evidence/rnn_adding.json")
    assert adding["baselines"]["constant"]["mse"] > 0.1
    gan = _json(root, "reports/metrics/gan.json")
    assert gan["test"]["fid"] >= 0 and gan["baseline"]["fid"] >= 0
    summary = (root / "reports" / "summary.md").read_text()
    assert all(f"| {name} |" in summary for name in RUNS)
    assert "## Fit" in summary
    assert (root / "reports/figures/learning_curves.png").stat().st_size > 1000


def test_mlflow_store_has_one_finished_run_per_run_with_epoch_curves(repo):
    root, _ = repo
    from deepfit.config import load_params
    from deepfit.evaluate.metrics import evaluation_kind, key_metric_names

    params = load_params(root / "params.yaml")
    client = mlflow_client(root)
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
            assert [m.step for m in history] == list(range(1, run_epochs(name) + 1)), (name, key)
            stamps = [m.timestamp for m in history]
            assert len(set(stamps)) == len(stamps), (name, key, stamps)  # each its own time
        assert any(k.startswith("test.") for k in run.data.metrics), name
        config = params.run(name)
        test_key, baseline_key, _ = key_metric_names(
            evaluation_kind(config.model, params.dataset(config.dataset))
        )
        assert test_key in run.data.metrics and baseline_key in run.data.metrics, name
        assert run.data.tags["deepfit.fit.verdict"] in VERDICTS, name
        assert "fit.skill_gap" in run.data.metrics and "fit.best_epoch" in run.data.metrics
        grads = [k for k in run.data.metrics if k.startswith("grad_norm.")]
        assert grads, name
        steps = [m.step for m in client.get_metric_history(run.info.run_id, grads[0])]
        assert steps == list(range(1, run_epochs(name) + 1)), name
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
        assert "figures/evaluation" in artifacts and "figures/training" in artifacts
    (gan,) = [r for r in runs if r.info.run_name == "gan"]
    gan_fid = _json(root, "reports/metrics/gan.json")["baseline"]["fid"]
    assert gan.data.metrics["baseline.strongest.fid"] == pytest.approx(gan_fid)


def test_every_run_has_a_fit_verdict_with_evidence(repo):
    root, _ = repo
    for name in RUNS:
        metrics = _json(root, f"reports/metrics/{name}.json")
        evidence = _json(root, f"reports/evidence/{name}.json")
        fit = evidence["fit"]
        assert fit["verdict"] in VERDICTS and fit["reasons"], name
        for key in ("best_epoch", "val_loss_best", "val_loss_last", "gap_best", "gap_last"):
            assert isinstance(fit[key], int | float), (name, key)
        # The verdict's best epoch (smoothed curve), as in MLflow, not the one whose weights
        # the model kept (evidence["train"]["best_epoch"]).
        assert metrics["fit"] == {"verdict": fit["verdict"], "best_epoch": fit["best_epoch"]}
        assert evidence["test"] and set(metrics["test"]) <= set(evidence["test"]), name
        assert evidence["gradients"]["layers"] >= 2, name
        info = _json(root, f"reports/evidence/{name}.run.json")
        assert len(info["mlflow"]["run_id"]) == 32 and info["train"]["seconds"] > 0, name
        assert info["mlflow"]["run_name"] == name
        rows = (root / "reports/plots" / name / "gradients/norms.csv").read_text().splitlines()
        assert rows[0] == "epoch,layer,norm" and len(rows) > run_epochs(name), name


def test_studies_write_tables_figures_and_grouped_runs(repo):
    root, _ = repo
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("deepfit")
    for study in SHARED_PIPELINE_STUDIES:
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
    run = mlflow.search_runs(experiment_names=["deepfit"], filter_string="run_name = 'fnn'")
    model = mlflow.pyfunc.load_model(f"runs:/{run.iloc[0].run_id}/model")
    proba = np.asarray(model.predict(np.zeros((2, 8, 8, 1), dtype="float32")))
    assert proba.shape == (2, 10)

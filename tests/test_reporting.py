"""The summary table: one row per run with its key metric beside the right baseline."""

from __future__ import annotations

import json
from pathlib import Path

from deepfit.config import load_params
from deepfit.evaluate.metrics import KEY_METRICS
from deepfit.report.summary import markdown_table, read_curves, summary_rows
from helpers import ROOT


def write_metrics(reports: Path, run: str, kind: str, test: dict, baselines: dict) -> None:
    """What evaluate@<run> writes: the DVC metrics file (the key baseline's score only), the
    evidence (every baseline) and the run info."""
    (reports / "metrics").mkdir(parents=True, exist_ok=True)
    (reports / "evidence").mkdir(parents=True, exist_ok=True)
    metric, name, _ = KEY_METRICS[kind]
    fit = {"verdict": "good", "best_epoch": 2}
    metrics = {
        "test": test,
        "baseline": {"name": name, metric: baselines[name][metric]},
        "fit": fit,
    }
    (reports / "metrics" / f"{run}.json").write_text(json.dumps(metrics))
    train = {"epochs": 3, "best_epoch": 2, "params": 1234}
    evidence = {"baselines": baselines, "train": train, "fit": fit, "gradients": {}}
    (reports / "evidence" / f"{run}.json").write_text(json.dumps(evidence))
    info = {"mlflow": {"run_id": "0" * 32, "run_name": run}, "train": {"seconds": 1.5}}
    (reports / "evidence" / f"{run}.run.json").write_text(json.dumps(info))


def test_rows_pick_key_metric_and_baseline_per_kind(tmp_path):
    params = load_params(ROOT / "params.yaml")
    svm = {"svm": {"accuracy": 0.98}, "logistic": {"accuracy": 0.5}}
    write_metrics(tmp_path, "cnn", "classification", {"accuracy": 0.99}, svm)
    ar = {"ar": {"rmse": 20.0}, "persistence": {"rmse": 1.0}}
    write_metrics(tmp_path, "lstm", "forecast", {"rmse": 16.0}, ar)
    constant = {"constant": {"mse": 0.16}}
    write_metrics(tmp_path, "lstm_adding", "regression", {"mse": 0.001}, constant)
    gan = {"real_vs_real": {"fid": 0.5}, "uniform_noise": {"fid": 300.0}}
    write_metrics(tmp_path, "gan", "generative", {"fid": 4.0}, gan)
    rows = {r["run"]: r for r in summary_rows(params, tmp_path)}
    assert set(rows) == {"cnn", "lstm", "lstm_adding", "gan"}  # runs without metrics left out
    assert (rows["lstm"]["metric"], rows["lstm"]["baseline"]) == ("test.rmse", 20.0)
    table = markdown_table(list(rows.values()))
    assert "| cnn | cnn | digits | test.accuracy | 0.9900 | 0.9800 (SVM) | +1.0 pts |" in table
    assert "0.80× baseline" in table and "8.00× baseline" in table
    assert "| 3 (2) | 1,234 | 1.5 s |" in table


def test_read_curves_round_trips_curve_tables(tmp_path):
    (tmp_path / "loss.csv").write_text("epoch,train,val\n1,1.0,1.5\n2,0.5,0.75\n")
    assert read_curves(tmp_path) == {"loss": [1.0, 0.5], "val_loss": [1.5, 0.75]}


def test_fit_table_shows_verdict_best_and_last_values():
    from deepfit.config import FitConfig
    from deepfit.evaluate.diagnosis import diagnose
    from deepfit.report.summary import fit_table

    fit = diagnose(
        {"loss": [1.0, 0.5, 0.3, 0.1], "val_loss": [1.0, 0.6, 0.5, 0.6]}, FitConfig(), (2.0, 2.0)
    )
    rows = [
        {"run": "fnn", "fit": fit, "gradients": {"vanished": "hidden_1"}},
        {"run": "old", "fit": {}, "gradients": {}},
    ]
    table = fit_table(rows)
    assert "| fnn | **overfit** | 3 of 4 | 0.3 / 0.1 | 0.5 / 0.6 | 0.2 / 0.5 |" in table
    assert "| 20% | hidden_1 |" in table
    assert "| old | n/a" in table
    assert "- fnn: validation loss rose 20% after its best epoch 3" in table

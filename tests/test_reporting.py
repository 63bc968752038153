"""The summary table: one row per run with its key metric beside the right baseline."""

from __future__ import annotations

import json
from pathlib import Path

from deepfit.config import load_params
from deepfit.evaluate.metrics import KEY_METRICS
from deepfit.report.summary import markdown_table, plain_words, read_curves, summary_rows
from helpers import ROOT


def write_metrics(
    reports: Path, run: str, kind: str, test: dict, baselines: dict, strongest: str, versus: dict
) -> None:
    """What evaluate@<run> writes: the DVC metrics file (the strongest baseline's score and the
    comparison), the evidence (every baseline, interval, paired test) and the run info."""
    (reports / "metrics").mkdir(parents=True, exist_ok=True)
    (reports / "evidence").mkdir(parents=True, exist_ok=True)
    metric = KEY_METRICS[kind][0]
    fit = {"verdict": "good", "best_epoch": 2}
    baseline = {
        "name": strongest,
        metric: baselines[strongest][metric],
        "verdict": versus["verdict"],
    }
    metrics = {"test": test, "baseline": baseline, "fit": fit}
    (reports / "metrics" / f"{run}.json").write_text(json.dumps(metrics))
    train = {"epochs": 3, "best_epoch": 2, "params": 1234}
    evidence = {
        "baselines": baselines,
        "strongest_baseline": strongest,
        "versus_baseline": versus,
        "train": train,
        "fit": fit,
        "gradients": {},
    }
    (reports / "evidence" / f"{run}.json").write_text(json.dumps(evidence))
    info = {"mlflow": {"run_id": "0" * 32, "run_name": run}, "train": {"seconds": 1.5}}
    (reports / "evidence" / f"{run}.run.json").write_text(json.dumps(info))


def versus(verdict: str, low: float, high: float, p_value: float | None = None) -> dict:
    judged = {"verdict": verdict, "ci_low": low, "ci_high": high, "test": "paired bootstrap"}
    return judged if p_value is None else {**judged, "p_value": p_value}


def test_rows_show_the_interval_and_the_strongest_baseline_with_the_verdict(tmp_path):
    params = load_params(ROOT / "params.yaml")
    digits = {"svm": {"accuracy": 0.98}, "logreg": {"accuracy": 0.5}}
    cnn = versus("no significant difference", 0.97, 0.995, 0.5)
    cnn["test"] = "McNemar exact"
    write_metrics(tmp_path, "cnn", "classification", {"accuracy": 0.99}, digits, "svm", cnn)
    sunspots = {"ar": {"rmse": 20.0}, "persistence": {"rmse": 30.0}}
    lstm = versus("better", 14.0, 18.0, 0.01)
    write_metrics(tmp_path, "lstm", "forecast", {"rmse": 16.0}, sunspots, "ar", lstm)
    adding = {"linear": {"mse": 0.155}, "constant": {"mse": 0.16}}
    rnn = versus("worse", 0.159, 0.162, 0.001)
    write_metrics(tmp_path, "rnn_adding", "regression", {"mse": 0.16}, adding, "linear", rnn)
    gmm = {"gmm_pca": {"fid": 1.2}, "real_vs_real": {"fid": 0.5}}
    gan = versus("worse", 5.2, 7.3)
    write_metrics(tmp_path, "gan", "generative", {"fid": 6.2}, gmm, "gmm_pca", gan)
    rows = {r["run"]: r for r in summary_rows(params, tmp_path)}
    assert set(rows) == {"cnn", "lstm", "rnn_adding", "gan"}  # runs without metrics left out
    assert (rows["lstm"]["metric"], rows["lstm"]["baseline"]) == ("test.rmse", 20.0)
    table = markdown_table(list(rows.values()))
    assert (
        "| cnn | cnn | digits | test.accuracy | 0.9900 [0.9700, 0.9950] | 0.9800 (svm) "
        "| **no significant difference** (p = 0.5, McNemar exact) |"
    ) in table
    assert "| **better** (p = 0.01, paired bootstrap) |" in table
    assert "| 6.2000 [5.2000, 7.3000] | 1.2000 (gmm_pca) | **worse** (intervals of both) |" in table
    assert "| 3 (2) | 1,234 | 1.5 s |" in table
    words = plain_words(list(rows.values()))
    assert "- **gan loses to its baseline**: test.fid 6.2000 against 1.2000 for gmm_pca" in words
    assert "- **cnn does not beat its baseline**" in words
    assert "lstm" not in words


def test_read_curves_round_trips_curve_tables(tmp_path):
    (tmp_path / "loss.csv").write_text("epoch,train,val\n1,1.0,1.5\n2,0.5,0.75\n")
    assert read_curves(tmp_path) == {"loss": [1.0, 0.5], "val_loss": [1.5, 0.75]}


def test_fit_table_shows_verdict_best_and_last_values():
    from deepfit.config import FitConfig
    from deepfit.evaluate.diagnosis import diagnose
    from deepfit.report.summary import fit_table

    # Validation loss turns up after epoch 3 and stays up while training loss falls: overfit.
    history = {
        "loss": [1.0, 0.5, 0.3, 0.15, 0.08, 0.04],
        "val_loss": [1.0, 0.6, 0.4, 0.42, 0.46, 0.5],
    }
    fit = diagnose(history, FitConfig(), (2.0, 2.0))
    rows = [
        {"run": "fnn", "fit": fit, "gradients": {"vanished": "hidden_1"}},
        {"run": "old", "fit": {}, "gradients": {}},
    ]
    table = fit_table(rows)
    assert "| fnn | **overfit** | 3 of 6 | 0.3 / 0.04 | 0.4 / 0.5 | 0.1 / 0.46 |" in table
    assert "| 25% | hidden_1 |" in table
    assert "| old | n/a" in table
    assert "- fnn: smoothed validation loss rose 0.1 (25%, 0.050 in skill" in table

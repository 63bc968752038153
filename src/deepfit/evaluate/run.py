"""evaluate@<run>: score a trained run on its test split beside baselines fitted on the same split,
judge its fit, and log all of it into the MLflow run that training created.

Writes three files per run:
- ``reports/metrics/<run>.json`` (DVC metrics, what users compare across experiments): the key
  test metrics, the baseline it is judged against, the fit verdict and the best epoch;
- ``reports/evidence/<run>.json``: every baseline, the fit evidence and the gradient-flow summary;
- ``reports/evidence/<run>.run.json``: what differs between executions (MLflow run id and name,
  training wall time).

The first two are the same for the same params and seeds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepfit import figures, tracking
from deepfit.config import Params, RunConfig, flatten
from deepfit.evaluate import baselines, diagnosis, metrics
from deepfit.evaluate.metrics import KEY_METRICS, evaluation_kind
from deepfit.models import load_model
from deepfit.outputs import (
    GRADIENTS_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RUN_FILE,
    atomic_dir,
    check_finite,
    csv_text,
    read_gradients,
    write_json,
    write_text,
)

if TYPE_CHECKING:
    import keras

    from deepfit.data import Prepared

log = logging.getLogger(__name__)

GAN_SAMPLES = 1000


@dataclass(frozen=True)
class EvalOutputs:
    metrics: Path
    evidence: Path
    run_info: Path
    plots_dir: Path
    figures_dir: Path

    @classmethod
    def for_run(cls, name: str, root: Path = Path()) -> EvalOutputs:
        return cls(
            metrics=root / "reports" / "metrics" / f"{name}.json",
            evidence=root / "reports" / "evidence" / f"{name}.json",
            run_info=root / "reports" / "evidence" / f"{name}.run.json",
            plots_dir=root / "reports" / "plots" / name / "eval",
            figures_dir=root / "reports" / "figures" / name / "evaluation",
        )


def evaluate_run(
    run: RunConfig,
    params: Params,
    data: Prepared,
    model_dir: Path,
    out: EvalOutputs,
    scorer_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``run`` on the test split; write metrics, evidence, plot data, figures; log to
    MLflow. Returns the metrics file's content."""
    summary = json.loads((model_dir / RUN_FILE).read_text())
    model = load_model(model_dir / MODEL_FILE, run.model)
    kind = evaluation_kind(run.model, params.dataset(run.dataset))
    with atomic_dir(out.plots_dir) as plots_dir, atomic_dir(out.figures_dir) as figures_dir:
        test, found = score(kind, run, params, model, data, scorer_dir, plots_dir, figures_dir)
        fit, gradients = diagnose_run(params, data, model_dir, kind)
        scores = metrics_file(kind, test, found, fit)
        evidence = {
            "baselines": found,
            "train": {k: summary[k] for k in ("epochs", "best_epoch", "params")},
            "fit": fit,
            "gradients": gradients,
        }
        check_finite({**scores, "evidence": evidence}, str(out.metrics))  # before MLflow
        _log(summary, params, run, kind, test, found, fit, gradients, figures_dir)
        # Last, so a failure above leaves no metrics file.
        write_json(out.run_info, _run_info(summary))
        write_json(out.evidence, evidence)
        write_json(out.metrics, scores)
    log.info(
        "%s: test.%s = %.4f; fit: %s (%s)",
        run.name,
        KEY_METRICS[kind][0],
        test[KEY_METRICS[kind][0]],
        fit["verdict"],
        fit["reasons"],
    )
    return scores


def metrics_file(
    kind: str, test: dict[str, Any], found: dict[str, Any], fit: dict[str, Any]
) -> dict[str, Any]:
    """What DVC compares: the test metrics, the key baseline's score, the verdict, best epoch."""
    metric, name, _ = KEY_METRICS[kind]
    return {
        "test": test,
        "baseline": {"name": name, metric: found[name][metric]},
        "fit": {"verdict": fit["verdict"], "best_epoch": fit["best_epoch"]},
    }


def _run_info(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "mlflow": {"run_id": summary["mlflow_run_id"], "run_name": summary.get("run_name")},
        "train": {"seconds": summary["seconds"]},
    }


def _log(summary, params, run, kind, test, found, fit, gradients, figures_dir) -> None:
    """Test and baseline numbers, the fit verdict and the figures into training's MLflow run."""
    with tracking.resume_run(summary["mlflow_run_id"], params.mlflow.experiment, run.name):
        import mlflow

        fit_metrics, fit_tags = diagnosis.mlflow_payload(fit, gradients)
        numbers = _numbers(flatten({"test": test, "baseline": found}))
        mlflow.log_metrics({**numbers, **fit_metrics})
        mlflow.log_artifacts(str(figures_dir), artifact_path="figures/evaluation")
        mlflow.set_tags({"deepfit.evaluation": kind, **fit_tags})


def diagnose_run(
    params: Params, data: Prepared, model_dir: Path, kind: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fit verdict with its evidence, and the gradient-flow summary, of a trained run."""
    history = json.loads((model_dir / HISTORY_FILE).read_text())
    generative = kind == "generative"
    reference = None
    if not generative:
        reference = diagnosis.reference_losses(data.train[1], data.val[1], data.spec.task)
    metric = {"classification": "accuracy", "generative": None}.get(kind, "mae")
    fit = diagnosis.diagnose(history, params.fit, reference, generative, metric)
    records = read_gradients(model_dir / GRADIENTS_FILE)
    return fit, diagnosis.gradient_summary(records, params.fit)


def score(
    kind: str,
    run: RunConfig,
    params: Params,
    model: keras.Model,
    data: Prepared,
    scorer_dir: Path | None,
    plots_dir: Path,
    figures_dir: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test metrics and baselines of one kind of run; writes its plot data and figures."""
    if kind == "generative":
        if scorer_dir is None:
            raise ValueError("a generative run needs the scorer model (models/_scorer)")
        return _generative(run, params, model, data, scorer_dir, plots_dir, figures_dir)
    if kind == "classification":
        return _classification(run, params, model, data, plots_dir, figures_dir)
    if kind == "forecast":
        return _forecast(run, model, data, plots_dir, figures_dir)
    return _regression(run, model, data, plots_dir, figures_dir)


def _classification(run, params, model, data, plots_dir, figures_dir):
    x_test, y_test = data.test
    proba = model.predict(x_test, batch_size=512, verbose=0)
    found = metrics.classification_metrics(y_test, proba)
    cm = found.pop("confusion")
    names = data.manifest.get("class_names") or [str(i) for i in range(proba.shape[1])]
    pairs = zip(
        [names[i] for i in y_test], [names[i] for i in np.argmax(proba, axis=1)], strict=True
    )
    write_text(plots_dir / "confusion.csv", csv_text(["actual", "predicted"], pairs))
    figures.confusion_matrix_png(cm, names, figures_dir / "confusion.png", title=run.name)
    baseline = baselines.classification_baselines(*data.train, x_test, y_test, params.seeds.split)
    return found, baseline


def _forecast(run, model, data, plots_dir, figures_dir):
    mean, std = _scale(data)
    x_test, y_test = data.test
    predicted = model.predict(x_test, verbose=0).reshape(-1) * std + mean
    actual = y_test.reshape(-1) * std + mean
    test = metrics.regression_metrics(actual, predicted)
    window = x_test.shape[1]
    baseline = baselines.forecast_baselines(*data.train, x_test, y_test, mean, std, window)
    ar_pred = baseline.get("ar", {}).pop("predictions", None)
    years = [int(y) for y in data.extras["test"].get("years", range(len(actual)))]
    rows = zip(years, actual.tolist(), predicted.tolist(), strict=True)
    write_text(plots_dir / "forecast.csv", csv_text(["year", "actual", "predicted"], rows))
    figures.forecast_png(years, actual, predicted, ar_pred, figures_dir / "forecast.png", run.name)
    return test, baseline


def _regression(run, model, data, plots_dir, figures_dir):
    mean, std = _scale(data)
    x_test, y_test = data.test
    predicted = model.predict(x_test, batch_size=512, verbose=0).reshape(-1) * std + mean
    actual = y_test.reshape(-1) * std + mean
    test = metrics.regression_metrics(actual, predicted)
    baseline = {"constant": baselines.constant_baseline(data.train[1] * std + mean, actual)}
    rows = zip(actual.tolist(), predicted.tolist(), strict=True)
    write_text(plots_dir / "predictions.csv", csv_text(["actual", "predicted"], rows))
    figures.scatter_true_pred_png(actual, predicted, figures_dir / "predictions.png", run.name)
    return test, baseline


def _generative(run, params, model, data, scorer_dir, plots_dir, figures_dir):
    from deepfit.evaluate.scorer import Scorer

    scorer = Scorer(scorer_dir)
    images = np.asarray(model.sample(GAN_SAMPLES, seed=params.seeds.train))
    x_train, _ = data.train
    x_test, _ = data.test
    # The generator draws in [0, 1]; the scorer reads images as stored (raw pixels or scaled).
    stored = 1.0 / (data.spec.input_scale or 1.0)
    real_test = scorer.features(x_test)
    fid = metrics.frechet_distance(scorer.features(images * stored), real_test)
    coverage = metrics.class_coverage(scorer.classes(images * stored), data.spec.n_outputs)
    rng = np.random.default_rng(params.seeds.split)
    noise = rng.uniform(0, 1, size=(len(x_test), *x_test.shape[1:])).astype(np.float32)
    baseline = {
        "real_vs_real": {"fid": metrics.frechet_distance(scorer.features(x_train), real_test)},
        "uniform_noise": {
            "fid": metrics.frechet_distance(scorer.features(noise * stored), real_test)
        },
    }
    shares = coverage.pop("shares")
    write_text(plots_dir / "class_shares.csv", csv_text(["class", "share"], enumerate(shares)))
    figures.image_grid_png(images[:100], figures_dir / "samples.png", title=run.name, ncols=10)
    return {"fid": fid, **coverage}, baseline


def _scale(data: Prepared) -> tuple[float, float]:
    scale = data.manifest.get("target_scale") or {}
    return float(scale.get("mean", 0.0)), float(scale.get("std", 1.0))


def _numbers(flat: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }

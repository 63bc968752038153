"""Evaluation of a trained run on its test split, beside baselines fitted on the same split.

``evaluate_run`` is the one call the evaluate stage makes: it writes ``reports/metrics/<run>.json``
(sections ``test``, ``baseline``, ``train``, ``fit``, ``gradients``: the same for the same params
and seeds) and ``reports/metrics/<run>.run.json`` (what differs between executions: the MLflow
run id and name, training wall time), plot data and figures, and logs the same numbers, the fit
verdict and figures into the MLflow run that training created.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfit import diagnosis, evaluation, figures
from deepfit.config import Params, RunConfig, flatten
from deepfit.data.config import DatasetConfig, dataset_kind_and_task
from deepfit.models import get_spec, load_model
from deepfit.outputs import atomic_dir, check_finite, write_json
from deepfit.training import GRADIENTS_FILE, HISTORY_FILE, MODEL_FILE, RUN_FILE, read_gradients

if TYPE_CHECKING:
    from deepfit.data import Prepared

log = logging.getLogger(__name__)

GAN_SAMPLES = 1000

# The number a run is judged by, per kind of evaluation, and the baseline it is compared with.
KEY_METRICS = {
    "classification": ("test.accuracy", "baseline.svm.accuracy", "higher"),
    "forecast": ("test.rmse", "baseline.ar.rmse", "lower"),
    "regression": ("test.mse", "baseline.constant.mse", "lower"),
    "generative": ("test.fid", "baseline.fid_real_vs_real", "lower"),
}


@dataclass(frozen=True)
class EvalOutputs:
    metrics: Path
    run_info: Path
    plots_dir: Path
    figures_dir: Path

    @classmethod
    def for_run(cls, name: str, root: Path = Path()) -> EvalOutputs:
        return cls(
            metrics=root / "reports" / "metrics" / f"{name}.json",
            run_info=root / "reports" / "metrics" / f"{name}.run.json",
            plots_dir=root / "reports" / "plots" / name / "eval",
            figures_dir=root / "reports" / "figures" / name / "evaluation",
        )


def evaluation_kind(run: RunConfig, dataset: DatasetConfig) -> str:
    """generative, classification, forecast (a windowed series) or regression; from params."""
    if get_spec(run.model).generative:
        return "generative"
    _, task = dataset_kind_and_task(dataset)
    if task == "classification":
        return "classification"
    return "forecast" if dataset.source == "sunspots" else "regression"


def evaluate_run(
    run: RunConfig,
    params: Params,
    data: Prepared,
    model_dir: Path,
    out: EvalOutputs,
    scorer_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``run`` on the test split; write metrics, plot data, figures; log to MLflow."""
    from deepfit import tracking

    summary = json.loads((model_dir / RUN_FILE).read_text())
    model = load_model(model_dir / MODEL_FILE, run.model)
    kind = evaluation_kind(run, params.dataset(run.dataset))
    with (
        atomic_dir(out.plots_dir) as plots_dir,
        atomic_dir(out.figures_dir) as figures_dir,
    ):
        if kind == "generative":
            if scorer_dir is None:
                raise ValueError("a generative run needs the scorer model (models/_scorer)")
            test, baseline = _generative(
                run, params, model, data, scorer_dir, plots_dir, figures_dir
            )
        elif kind == "classification":
            test, baseline = _classification(run, params, model, data, plots_dir, figures_dir)
        elif kind == "forecast":
            test, baseline = _forecast(run, model, data, plots_dir, figures_dir)
        else:
            test, baseline = _regression(run, model, data, plots_dir, figures_dir)
        fit, gradients = diagnose_run(run, params, data, model_dir, kind)
        metrics = {
            "test": test,
            "baseline": baseline,
            "train": {k: summary[k] for k in ("epochs", "best_epoch", "params")},
            "fit": fit,
            "gradients": gradients,
        }
        run_info = {
            "mlflow": {"run_id": summary["mlflow_run_id"], "run_name": summary.get("run_name")},
            "train": {"seconds": summary["seconds"]},
        }
        check_finite(metrics, str(out.metrics))  # before MLflow sees a number
        with tracking.resume_run(summary["mlflow_run_id"], params.mlflow.experiment, run.name):
            import mlflow

            fit_metrics, fit_tags = diagnosis.mlflow_payload(fit, gradients)
            mlflow.log_metrics(
                {**_numbers(flatten({"test": test, "baseline": baseline})), **fit_metrics}
            )
            mlflow.log_artifacts(str(figures_dir), artifact_path="figures/evaluation")
            mlflow.set_tags({"deepfit.evaluation": kind, **fit_tags})
        # Last, so a failure above leaves no metrics file.
        write_json(out.run_info, run_info)
        write_json(out.metrics, metrics)
    key, _, _ = KEY_METRICS[kind]
    log.info(
        "%s: %s = %.4f; fit: %s (%s)",
        run.name,
        key,
        flatten(metrics)[key],
        fit["verdict"],
        fit["reasons"],
    )
    return metrics


def diagnose_run(
    run: RunConfig, params: Params, data: Prepared, model_dir: Path, kind: str
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


def _classification(run, params, model, data, plots_dir, figures_dir):
    import numpy as np

    x_test, y_test = data.test
    proba = model.predict(x_test, batch_size=512, verbose=0)
    found = evaluation.classification_metrics(y_test, proba)
    cm = found.pop("confusion")
    names = data.manifest.get("class_names") or [str(i) for i in range(proba.shape[1])]
    _write_csv(
        plots_dir / "confusion.csv",
        ["actual", "predicted"],
        zip([names[i] for i in y_test], [names[i] for i in np.argmax(proba, axis=1)], strict=True),
    )
    figures.confusion_matrix_png(cm, names, figures_dir / "confusion.png", title=run.name)
    baseline = evaluation.classification_baselines(*data.train, x_test, y_test, params.seeds.split)
    return found, baseline


def _forecast(run, model, data, plots_dir, figures_dir):
    mean, std = _scale(data)
    x_test, y_test = data.test
    predicted = model.predict(x_test, verbose=0).reshape(-1) * std + mean
    actual = y_test.reshape(-1) * std + mean
    test = evaluation.regression_metrics(actual, predicted)
    window = x_test.shape[1]
    baseline = evaluation.forecast_baselines(*data.train, x_test, y_test, mean, std, window)
    ar_pred = baseline.get("ar", {}).pop("predictions", None)
    years = data.extras["test"].get("years", range(len(actual)))
    years = [int(y) for y in years]
    _write_csv(
        plots_dir / "forecast.csv",
        ["year", "actual", "predicted"],
        zip(years, actual.tolist(), predicted.tolist(), strict=True),
    )
    figures.forecast_png(years, actual, predicted, ar_pred, figures_dir / "forecast.png", run.name)
    return test, baseline


def _regression(run, model, data, plots_dir, figures_dir):
    mean, std = _scale(data)
    x_test, y_test = data.test
    predicted = model.predict(x_test, batch_size=512, verbose=0).reshape(-1) * std + mean
    actual = y_test.reshape(-1) * std + mean
    test = evaluation.regression_metrics(actual, predicted)
    baseline = {"constant": evaluation.constant_baseline(data.train[1] * std + mean, actual)}
    _write_csv(
        plots_dir / "predictions.csv",
        ["actual", "predicted"],
        zip(actual.tolist(), predicted.tolist(), strict=True),
    )
    figures.scatter_true_pred_png(actual, predicted, figures_dir / "predictions.png", run.name)
    return test, baseline


def _generative(run, params, model, data, scorer_dir, plots_dir, figures_dir):
    import numpy as np

    from deepfit.scoring import Scorer

    scorer = Scorer(scorer_dir)
    images = np.asarray(model.sample(GAN_SAMPLES, seed=params.seeds.train))
    x_train, _ = data.train
    x_test, _ = data.test
    real_test = scorer.features(x_test)
    fid = evaluation.frechet_distance(scorer.features(images), real_test)
    coverage = evaluation.class_coverage(scorer.classes(images), data.spec.n_outputs)
    rng = np.random.default_rng(params.seeds.split)
    noise = rng.uniform(0, 1, size=(len(x_test), *x_test.shape[1:])).astype(x_test.dtype)
    baseline = {
        "fid_real_vs_real": evaluation.frechet_distance(scorer.features(x_train), real_test),
        "fid_uniform_noise": evaluation.frechet_distance(scorer.features(noise), real_test),
    }
    shares = coverage.pop("shares")
    _write_csv(plots_dir / "class_shares.csv", ["class", "share"], enumerate(shares))
    figures.image_grid_png(images[:100], figures_dir / "samples.png", title=run.name, ncols=10)
    return {"fid": fid, **coverage}, baseline


def _scale(data: Prepared) -> tuple[float, float]:
    scale = data.manifest.get("target_scale") or {}
    return float(scale.get("mean", 0.0)), float(scale.get("std", 1.0))


def _write_csv(path: Path, header: list[str], rows) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def _numbers(flat: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def key_metric(metrics: dict[str, Any], kind: str) -> tuple[str, float | None, float | None, str]:
    """(name, value, baseline value, better direction) of the number a run is judged by."""
    key, base, direction = KEY_METRICS[kind]
    flat = flatten(metrics)
    return key, flat.get(key), flat.get(base), direction

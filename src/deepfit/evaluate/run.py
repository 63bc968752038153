"""evaluate@<run>: score a trained run on its test split beside baselines fitted on the same split,
judge its fit, and log all of it into the MLflow run that training created.

Writes three files per run:
- ``reports/metrics/<run>.json`` (DVC metrics, what users compare across experiments): the key
  test metric, the strongest baseline's score and how the run compares with it (better, no
  significant difference, worse), the fit verdict and the best epoch;
- ``reports/evidence/<run>.json``: every test metric, every baseline, the interval and paired
  test against the strongest, the fit evidence and the gradient-flow summary;
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
from deepfit.data import DataError
from deepfit.evaluate import baselines, diagnosis, judge, metrics, stats
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
    baselines_dir: Path = Path(),
    scorer_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``run`` on the test split beside its strongest baseline; write metrics,
    evidence, plot data, figures; log to MLflow. Returns the metrics file's content.

    ``baselines_dir`` is the repository root under which baseline@<dataset> wrote its outputs.
    """
    summary = json.loads((model_dir / RUN_FILE).read_text())
    model = load_model(model_dir / MODEL_FILE, run.model)
    kind = evaluation_kind(run.model, params.dataset(run.dataset))
    with atomic_dir(out.plots_dir) as plots_dir, atomic_dir(out.figures_dir) as figures_dir:
        where = Where(plots_dir, figures_dir, baselines_dir, scorer_dir)
        scored = score(kind, run, params, model, data, where)
        fit, gradients = diagnose_run(params, data, model_dir, kind)
        history = json.loads((model_dir / HISTORY_FILE).read_text())
        diagnosis.fit_figure(history, fit, params.fit, where.figures_dir / "fit.png", run.name)
        scores = metrics_file(kind, scored, fit)
        evidence = {
            "test": scored.test,
            "baselines": scored.baselines,
            "strongest_baseline": scored.strongest,
            "versus_baseline": scored.judged,
            "train": {k: summary[k] for k in ("epochs", "best_epoch", "params")},
            "fit": fit,
            "gradients": gradients,
        }
        check_finite({**scores, "evidence": evidence}, str(out.metrics))  # before MLflow
        _log(summary, params, run, kind, scored, fit, gradients, figures_dir)
        # Last, so a failure above leaves no metrics file.
        write_json(out.run_info, _run_info(summary))
        write_json(out.evidence, evidence)
        write_json(out.metrics, scores)
    metric = KEY_METRICS[kind][0]
    log.info(
        "%s: test.%s = %.4f; strongest baseline %s %.4g: %s; fit: %s (%s)",
        run.name,
        metric,
        scored.test[metric],
        scored.strongest,
        scored.baselines.get(scored.strongest, {}).get(metric, float("nan")),
        scored.judged["verdict"],
        fit["verdict"],
        fit["reasons"],
    )
    return scores


@dataclass(frozen=True)
class Where:
    """Folders one evaluation reads from and writes into."""

    plots_dir: Path
    figures_dir: Path
    baselines_dir: Path
    scorer_dir: Path | None


@dataclass(frozen=True)
class Scored:
    """Test metrics, every baseline, the strongest one, and the run judged against it."""

    test: dict[str, Any]
    baselines: dict[str, Any]
    strongest: str
    judged: dict[str, Any]


def metrics_file(kind: str, scored: Scored, fit: dict[str, Any]) -> dict[str, Any]:
    """What DVC compares, kept short so that `dvc exp show` stays readable: the key test
    metric, the strongest baseline's score and how the run compares with it, the fit verdict
    and its best epoch (of the smoothed validation curve, as MLflow's ``fit.best_epoch``).
    The evidence file has the rest."""
    metric = KEY_METRICS[kind][0]
    return {
        "test": {metric: scored.test[metric]},
        "baseline": {
            "name": scored.strongest,
            metric: scored.baselines[scored.strongest][metric],
            "verdict": scored.judged["verdict"],
        },
        "fit": {"verdict": fit["verdict"], "best_epoch": fit["best_epoch"]},
    }


def _run_info(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "mlflow": {"run_id": summary["mlflow_run_id"], "run_name": summary.get("run_name")},
        "train": {"seconds": summary["seconds"]},
    }


def _log(summary, params, run, kind, scored: Scored, fit, gradients, figures_dir) -> None:
    """Test and baseline numbers, the comparison, the fit verdict and the figures into
    training's MLflow run."""
    metric = KEY_METRICS[kind][0]
    judged = scored.judged
    with tracking.resume_run(summary["mlflow_run_id"], params.mlflow.experiment, run.name):
        import mlflow

        fit_metrics, fit_tags = diagnosis.mlflow_payload(fit, gradients)
        numbers = _numbers(flatten({"test": scored.test, "baseline": scored.baselines}))
        numbers[f"baseline.strongest.{metric}"] = scored.baselines[scored.strongest][metric]
        numbers[f"test.{metric}.ci_low"] = judged["ci_low"]
        numbers[f"test.{metric}.ci_high"] = judged["ci_high"]
        if "p_value" in judged:
            numbers["baseline.p_value"] = judged["p_value"]
        mlflow.log_metrics({**numbers, **fit_metrics})
        mlflow.log_artifacts(str(figures_dir), artifact_path="figures/evaluation")
        tags = {
            "deepfit.evaluation": kind,
            "deepfit.baseline.strongest": scored.strongest,
            "deepfit.baseline.verdict": judged["verdict"],
        }
        mlflow.set_tags({**tags, **fit_tags})


def diagnose_run(
    params: Params, data: Prepared, model_dir: Path, kind: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fit verdict with its evidence, and the gradient-flow summary, of a trained run."""
    history = json.loads((model_dir / HISTORY_FILE).read_text())
    generative = kind == "generative"
    reference = None
    if not generative:
        reference = diagnosis.reference_losses(data.train[1], data.val[1], data.spec.task)
    token_kinds = ("classification", "language_model", "translation")
    metric = "accuracy" if kind in token_kinds else None if generative else "mae"
    fit = diagnosis.diagnose(history, params.fit, reference, generative, metric)
    records = read_gradients(model_dir / GRADIENTS_FILE)
    return fit, diagnosis.gradient_summary(records, params.fit)


def score(
    kind: str, run: RunConfig, params: Params, model: keras.Model, data: Prepared, where: Where
) -> Scored:
    """Test metrics of one kind of run, judged against its strongest baseline; writes its plot
    data and figures."""
    if kind == "generative":
        if where.scorer_dir is None:
            raise ValueError("a generative run needs the scorer model (models/_scorer)")
        return _generative(run, params, model, data, where)
    found = _dataset_baselines(run.dataset, where.baselines_dir)
    if kind == "classification":
        return _classification(run, params, model, data, where, found)
    if kind == "language_model":
        return _language_model(run, params, model, data, where, found)
    if kind == "translation":
        return _translation(run, params, model, data, where, found)
    return _regression(kind, run, params, model, data, where, found)


def _dataset_baselines(dataset: str, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """What baseline@<dataset> wrote: its scores file and each baseline's test predictions."""
    from deepfit.evaluate.baseline_run import PREDICTIONS_FILE, BaselineOutputs

    out = BaselineOutputs.for_dataset(dataset, root)
    if not out.scores.is_file():
        raise DataError(f"{out.scores}: not found; run `dvc repro baseline@{dataset}` first")
    scores = json.loads(out.scores.read_text())
    with np.load(out.predictions_dir / PREDICTIONS_FILE, allow_pickle=False) as archive:
        predictions = {name: archive[name] for name in archive.files}
    if not scores.get("strongest"):
        raise DataError(f"{out.scores}: no baseline declared for this dataset's family")
    return scores, predictions


def _classification(run, params, model, data, where: Where, found) -> Scored:
    scores, predictions = found
    x_test, y_test = data.test
    proba = model.predict(x_test, batch_size=512, verbose=0)
    test = metrics.classification_metrics(y_test, proba)
    cm = test.pop("confusion")
    y_pred = np.argmax(proba, axis=1)
    names = data.manifest.get("class_names") or [str(i) for i in range(proba.shape[1])]
    pairs = zip([names[i] for i in y_test], [names[i] for i in y_pred], strict=True)
    write_text(where.plots_dir / "confusion.csv", csv_text(["actual", "predicted"], pairs))
    figures.confusion_matrix_png(cm, names, where.figures_dir / "confusion.png", title=run.name)
    strongest = scores["strongest"]
    judged = judge.classification(y_test, y_pred, predictions[strongest], params.seeds.split)
    return Scored(test, scores["baselines"], strongest, judged)


def _language_model(run, params, model, data, where: Where, found) -> Scored:
    """Bits per character of the next-character predictions on the test windows, beside the
    baseline's bits on the same targets; plot data: mean bits by position in the window."""
    scores, predictions = found
    x_test, y_test = data.test
    proba = model.predict(np.asarray(x_test, dtype=np.int32), batch_size=256, verbose=0)
    bits = metrics.target_bits(y_test, proba)
    test = metrics.language_model_metrics(bits, proba.argmax(axis=-1) == y_test)
    strongest = scores["strongest"]
    base = np.asarray(predictions[strongest], dtype=np.float64)
    judged = judge.bits(bits, base, params.seeds.split)
    positions = range(1, bits.shape[1] + 1)
    rows = zip(positions, bits.mean(axis=0).tolist(), base.mean(axis=0).tolist(), strict=True)
    header = ["position", "model", strongest]
    write_text(where.plots_dir / "bits_by_position.csv", csv_text(header, rows))
    test["gradient_reach"] = _gradient_reach(model, data, where.plots_dir)
    return Scored(test, scores["baselines"], strongest, judged)


def _gradient_reach(model, data: Prepared, plots_dir: Path) -> float:
    """Gradients through time on the first test windows (plot data: norm by distance back);
    returns the norm at the window's first position over the norm at its last."""
    from deepfit.train.gradients import gradients_through_time, reach_of

    norms = gradients_through_time(model, *data.test)
    rows = enumerate(norms)
    write_text(plots_dir / "gradients_through_time.csv", csv_text(["distance", "norm"], rows))
    return reach_of(norms)


def _translation(run, params, model, data, where: Where, found) -> Scored:
    """Greedy decoding of the test sources; exact match and character error rate beside the
    strongest rule-free baseline (McNemar on the items each gets exactly right)."""
    from deepfit.data.words import ids_to_text
    from deepfit.evaluate.baseline_run import texts

    scores, predictions = found
    sources, targets = texts(data, "test")
    proba = model.predict(data.test[0], batch_size=256, verbose=0)
    predicted = ids_to_text(proba.argmax(axis=-1), data.manifest["class_names"])
    test = metrics.translation_metrics(targets, predicted)
    strongest = scores["strongest"]
    truth, ours = np.asarray(targets, dtype=str), np.asarray(predicted, dtype=str)
    judged = judge.classification(truth, ours, predictions[strongest], params.seeds.split)
    numbers = data.extras["test"]["number"].tolist()
    rows = zip(numbers, sources, targets, predicted, strict=True)
    header = ["number", "source", "target", "predicted"]
    write_text(where.plots_dir / "translations.csv", csv_text(header, rows))
    return Scored(test, scores["baselines"], strongest, judged)


def _regression(kind, run, params, model, data, where: Where, found) -> Scored:
    """A forecast (sunspots, years on the x axis) or a plain regression, in original units."""
    scores, predictions = found
    mean, std = _scale(data)
    x_test, y_test = data.test
    predicted = model.predict(x_test, batch_size=512, verbose=0).reshape(-1) * std + mean
    actual = y_test.reshape(-1) * std + mean
    test = metrics.regression_metrics(actual, predicted)
    strongest = scores["strongest"]
    base = np.asarray(predictions[strongest], dtype=np.float64).reshape(-1)
    judged = judge.errors(actual, predicted, base, KEY_METRICS[kind][0], params.seeds.split)
    if kind == "forecast":
        years = [int(y) for y in data.extras["test"].get("years", range(len(actual)))]
        rows = zip(years, actual.tolist(), predicted.tolist(), strict=True)
        write_text(
            where.plots_dir / "forecast.csv", csv_text(["year", "actual", "predicted"], rows)
        )
        figures.forecast_png(
            years,
            actual,
            predicted,
            base,
            where.figures_dir / "forecast.png",
            run.name,
            baseline_label=f"{strongest} baseline",
        )
    else:
        rows = zip(actual.tolist(), predicted.tolist(), strict=True)
        write_text(where.plots_dir / "predictions.csv", csv_text(["actual", "predicted"], rows))
        figures.scatter_true_pred_png(
            actual, predicted, where.figures_dir / "predictions.png", run.name
        )
    return Scored(test, scores["baselines"], strongest, judged)


def _generative(run, params, model, data, where: Where) -> Scored:
    """FID and class cover of the GAN's samples beside a Gaussian mixture in PCA space, both
    scored by the fixed scorer; a nearest-training-image distance checks both for copying."""
    from deepfit.evaluate.scorer import Scorer

    scorer = Scorer(where.scorer_dir)
    seed = params.seeds.split
    # The generator draws in [0, 1]; the scorer and the mixture read images as stored (raw
    # pixels, or scaled in prepare as the digits are).
    stored = 1.0 / (data.spec.input_scale or 1.0)
    images = np.asarray(model.sample(GAN_SAMPLES, seed=params.seeds.train)) * stored
    (x_train, _), (x_val, _), (x_test, _) = data.train, data.val, data.test
    real = scorer.features(x_test)
    fake = scorer.features(images)
    test = {"fid": metrics.frechet_distance(fake, real)}
    test.update(metrics.class_coverage(scorer.classes(images), data.spec.n_outputs))
    shares = test.pop("shares")
    interval = stats.frechet_bootstrap(fake, real, seed=seed)
    test["nearest_train_ratio"] = baselines.nearest_train_distance(images, x_train, x_test)["ratio"]
    grid = params.baselines.get("generation", {}).get("gmm_pca")
    if grid is None:
        raise DataError("baselines.generation.gmm_pca: a generative run needs this baseline")
    gmm = baselines.gmm_pca(x_train, x_val, x_test, scorer.features, grid, seed=seed)
    samples = gmm.pop("samples")
    gmm["nearest_train_ratio"] = baselines.nearest_train_distance(samples, x_train, x_test)["ratio"]
    gmm_interval = stats.frechet_bootstrap(scorer.features(samples), real, seed=seed)
    found = {"gmm_pca": gmm, **_references(scorer, x_train, x_test, real, seed, stored)}
    judged = judge.generation(interval, gmm_interval, test["fid"] < gmm["fid"])
    write_text(
        where.plots_dir / "class_shares.csv", csv_text(["class", "share"], enumerate(shares))
    )
    figures.image_grid_png(
        images[:100] / stored, where.figures_dir / "samples.png", run.name, ncols=10
    )
    figures.image_grid_png(
        samples[:100] / stored, where.figures_dir / "gmm_samples.png", f"{run.name}: GMM", 10
    )
    return Scored(test, found, "gmm_pca", judged)


def _references(scorer, x_train, x_test, real, seed: int, stored: float) -> dict[str, Any]:
    """Not baselines to beat but the scale of FID: real vs real (the floor), uniform noise."""
    noise = np.random.default_rng(seed).uniform(0, stored, size=x_test.shape).astype(np.float32)
    return {
        "real_vs_real": {"fid": metrics.frechet_distance(scorer.features(x_train), real)},
        "uniform_noise": {"fid": metrics.frechet_distance(scorer.features(noise), real)},
    }


def _scale(data: Prepared) -> tuple[float, float]:
    scale = data.manifest.get("target_scale") or {}
    return float(scale.get("mean", 0.0)), float(scale.get("std", 1.0))


def _numbers(flat: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }

"""study@<study>: one base model trained in several variants on the same data.

``capacity`` varies the model's size, ``regularisation`` its regularisers, ``activation`` its
activation function; every variant gets the same fit verdict as a pipeline run (see
``deepfit.evaluate.diagnosis``). A study writes ``reports/studies/<study>.md`` and ``.csv`` (one
row per variant), the figure ``reports/figures/studies/<study>.png``, every variant's history and
gradient norms under ``models/studies/<study>/`` (in DVC's cache, not git, so a fresh clone
runs the study and fills its own MLflow store), and an MLflow parent run ``study:<study>`` with
one child run per variant.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfit import tracking
from deepfit.config import Params, StudyConfig
from deepfit.data import DataError
from deepfit.evaluate import diagnosis
from deepfit.outputs import (
    HISTORY_FILE,
    atomic_dir,
    csv_text,
    write_gradients,
    write_json,
    write_text,
)
from deepfit.study.figures import study_png

if TYPE_CHECKING:
    from deepfit.config import RunConfig
    from deepfit.data import Prepared

log = logging.getLogger(__name__)

# Columns of the study table, in order (the CSV has them all; the markdown a readable subset).
COLUMNS = (
    "variant",
    "params",
    "epochs",
    "best_epoch",
    "train_loss_last",
    "val_loss_best",
    "val_loss_last",
    "gap_best",
    "skill_gap",
    "val_rise",
    "train_skill",
    "val_error_best",
    "train_error_last",
    "grad_first_epoch1",
    "grad_first_median",
    "grad_last_median",
    "vanished",
    "verdict",
    "reasons",
    "seconds",
)


@dataclass(frozen=True)
class StudyOutputs:
    table: Path
    csv: Path
    figure: Path
    runs_dir: Path

    @classmethod
    def for_study(cls, name: str, root: Path = Path()) -> StudyOutputs:
        return cls(
            table=root / "reports" / "studies" / f"{name}.md",
            csv=root / "reports" / "studies" / f"{name}.csv",
            figure=root / "reports" / "figures" / "studies" / f"{name}.png",
            runs_dir=root / "models" / "studies" / name,
        )


def subsample(data: Prepared, size: int | None, seed: int) -> Prepared:
    """``data`` with a seeded random ``size`` of its training split (all of it for None)."""
    import numpy as np

    x, y = data.train
    if size is None:
        return data
    if size > len(x):
        raise DataError(f"train_size: {size} is larger than the training split ({len(x)} samples)")
    pick = np.sort(np.random.default_rng(seed).choice(len(x), size=size, replace=False))
    return replace(data, train=(x[pick], y[pick]))


def run_study(
    study: StudyConfig, params: Params, data: Prepared, out: StudyOutputs
) -> list[dict[str, Any]]:
    """Train every variant, judge its fit, and write the study's table, figure and MLflow runs."""
    try:
        if study.lengths:
            probes = through_time_windows(data.val, study.lengths)
            data = first_characters(data, study.train_size)
        else:
            probes = {}
            data = subsample(data, study.train_size, params.seeds.split)
    except DataError as exc:
        raise DataError(f"studies.{study.name}.{exc}") from None
    metric = "accuracy" if data.spec.task == "classification" else None
    flat = {"study.kind": study.kind, "study.train_size": study.train_size or len(data.train[0])}
    if study.lengths:
        flat["study.lengths"] = list(study.lengths)
    points, histories, gradients, through_time = [], {}, {}, {}
    with (
        tracking.start_run(
            study.base,
            params.mlflow.experiment,
            flat,
            name=f"study:{study.name}",
            tags={"deepfit.study": study.name, "deepfit.study.kind": study.kind},
        ),
        atomic_dir(out.runs_dir) as runs_dir,
    ):
        import mlflow

        for i, (name, run) in enumerate(study.variants.items(), start=1):
            log.info("%s: variant %d/%d: %s", study.name, i, len(study.variants), name)
            point, history, records, norms = _variant(
                study, name, run, params, data, metric, probes
            )
            points.append(point)
            histories[name] = history
            gradients[name] = records
            write_json(runs_dir / name / HISTORY_FILE, history)
            if records:
                write_gradients(runs_dir / name / "gradients.json", records)
            if norms:
                through_time[name] = norms
                write_json(runs_dir / name / "gradients_through_time.json", norms)
        table = markdown_table(study, points)
        write_text(out.csv, csv_table(points))
        write_text(out.table, table)
        study_png(study.kind, points, histories, gradients, out.figure, study.name, through_time)
        mlflow.log_artifact(str(out.table), artifact_path="study")
        mlflow.log_artifact(str(out.csv), artifact_path="study")
        mlflow.log_artifact(str(out.figure), artifact_path="study")
    return points


def first_characters(data: Prepared, characters: int | None) -> Prepared:
    """A character corpus with only its training split's first windows, ``characters`` in all
    (whole windows; all of them for None)."""
    x, y = data.train
    if characters is None:
        return data
    total = x.shape[0] * x.shape[1]
    if characters > total:
        raise DataError(
            f"train_size: {characters} is larger than the training split ({total} characters)"
        )
    keep = max(1, characters // x.shape[1])
    return replace(data, train=(x[:keep], y[:keep]))


def through_time_windows(split: tuple[Any, Any], lengths: tuple[int, ...]) -> dict[int, Any]:
    """A character split cut again into windows of each of ``lengths``: ``{length: (x, y)}``."""
    from deepfit.data.text import windows

    ids = corpus_ids(split)
    cut = {}
    for length in lengths:
        found = windows(ids, length)
        if not len(found["x"]):
            raise DataError(
                f"lengths: {length} characters is longer than the validation split "
                f"({len(ids) - 1} characters)"
            )
        cut[length] = (found["x"], found["y"])
    return cut


def corpus_ids(split: tuple[Any, Any]) -> Any:
    """A character split's ids in text order, from its non-overlapping windows (``x``) and the
    ids one position later (``y``): the windows' characters and the last one's next."""
    import numpy as np

    x, y = (np.asarray(a) for a in split)
    if x.ndim != 2 or x.shape != y.shape or not np.array_equal(x[:, 1:], y[:, :-1]):
        raise DataError("base.dataset: expected windows of a character corpus (source: text)")
    if not np.array_equal(x[1:, 0], y[:-1, -1]):
        raise DataError("base.dataset: the corpus' windows are not consecutive")
    return np.concatenate([x.reshape(-1), y[-1:, -1]])


def _variant(
    study: StudyConfig,
    name: str,
    run: RunConfig,
    params: Params,
    data: Prepared,
    metric: str | None,
    probes: dict[int, Any],
) -> tuple[dict[str, Any], dict[str, list[float]], list[dict[str, float]], dict[int, list]]:
    """Train one variant as a child MLflow run; judge its fit; return its table row, history,
    gradient norms and its gradients through time on each of ``probes``' window lengths."""
    import mlflow

    from deepfit.train.gradients import gradients_through_time, reach_of
    from deepfit.train.run import build_model, run_params

    reference = diagnosis.reference_losses(data.train[1], data.val[1], data.spec.task)
    model = build_model(run, params, data)
    tags = {"deepfit.study": study.name, "deepfit.variant": name}
    with tracking.start_run(
        run,
        params.mlflow.experiment,
        run_params(run, params),
        name=f"{study.name}/{name}",
        tags=tags,
        nested=True,
    ):
        history, records, seconds = _fit_variant(model, run, params, data)
        verdict = diagnosis.diagnose(history, params.fit, reference, metric=metric)
        grad_summary = diagnosis.gradient_summary(records, params.fit)
        fit_metrics, fit_tags = diagnosis.mlflow_payload(verdict, grad_summary)
        # On the first validation windows of each length (evaluate measures a run on test).
        norms = {n: gradients_through_time(model, *windows) for n, windows in probes.items()}
        reach = {n: reach_of(values) for n, values in norms.items()}
        logged = {f"gradient_reach.{n}": value for n, value in reach.items()}
        mlflow.log_metrics({**fit_metrics, "n_params": model.count_params(), **logged})
        mlflow.set_tags(fit_tags)
    log.info("%s/%s: %s (%s)", study.name, name, verdict["verdict"], verdict["reasons"])
    point = _point(name, int(model.count_params()), verdict, grad_summary, metric, seconds)
    if norms:
        point.update(model=run.model, **{f"reach_{n}": value for n, value in reach.items()})
    return point, history, records, norms


def _fit_variant(
    model: Any, run: RunConfig, params: Params, data: Prepared
) -> tuple[dict[str, list[float]], list[dict[str, float]], float]:
    """Fit without early stopping unless the variant asks for it: the study shows what training
    for that long does, overfitting included. A diverged variant stops and is judged so."""
    import mlflow

    from deepfit.train.callbacks import DivergenceGuard, MlflowMetrics
    from deepfit.train.gradients import gradient_callback
    from deepfit.train.loop import fit, standard_callbacks

    callbacks = [DivergenceGuard(raise_error=False), MlflowMetrics()]
    if run.train.early_stopping.enabled:
        callbacks += standard_callbacks(run.train, generative=False)
    grads = gradient_callback(model, data, run.train, params.seeds.train, generative=False)
    if grads is not None:
        callbacks.append(grads)
    started = time.perf_counter()
    try:
        history = fit(model, data, run.train, callbacks, False, params.seeds.train)
    finally:
        mlflow.flush_async_logging()
    records = grads.ordered_records() if grads is not None else []
    return history, records, time.perf_counter() - started


def _point(
    name: str,
    n_params: int,
    verdict: dict[str, Any],
    grad_summary: dict[str, Any],
    metric: str | None,
    seconds: float,
) -> dict[str, Any]:
    """One row of the study table."""
    point = {
        "variant": name,
        "params": n_params,
        **{k: verdict[k] for k in COLUMNS if k in verdict},
        "seconds": round(seconds, 2),
    }
    if metric:
        point["val_error_best"] = 1 - verdict[f"val_{metric}_best"]
        point["train_error_last"] = 1 - verdict[f"train_{metric}_last"]
    if grad_summary:
        point["grad_first_epoch1"] = grad_summary["first_norm_epoch1"]
        point["grad_first_median"] = grad_summary["first_norm_median"]
        point["grad_last_median"] = grad_summary["last_norm_median"]
        point["vanished"] = grad_summary["vanished"]
    return point


def csv_table(points: list[dict[str, Any]]) -> str:
    """Every column of the study table, one row per variant (a sequence_length study's also
    name the model and give the gradient's reach at each window length)."""
    reach = [k for k in (points[0] if points else {}) if k.startswith("reach_")]
    columns = COLUMNS + (("model", *reach) if reach else ())
    return csv_text(columns, ([p.get(c) for c in columns] for p in points))


def markdown_table(study: StudyConfig, points: list[dict[str, Any]]) -> str:
    """The study's table: size, losses at the last and best epochs, gap, gradients, verdict."""
    show = [
        ("variant", "variant", str),
        ("params", "parameters", lambda v: f"{v:,}"),
        ("best_epoch", "best epoch", str),
        ("train_loss_last", "train loss (last)", _g),
        ("val_loss_best", "val loss (best)", _g),
        ("val_loss_last", "val loss (last)", _g),
        ("skill_gap", "skill gap", _f),
        ("val_rise", "val rise", lambda v: f"{v:.0%}"),
        ("val_error_best", "val error (best)", _f),
    ]
    if study.kind == "activation":
        show += [
            ("grad_first_epoch1", "first-layer grad (epoch 1)", _g),
            ("vanished", "vanished layers", lambda v: v or "none"),
        ]
    if study.kind == "sequence_length":
        show.insert(1, ("model", "model", str))
        show.append(("val_loss_best", "val bits/char (best)", lambda v: f"{v / math.log(2):.3f}"))
        show += [(f"reach_{n}", f"reach, {n} chars", _reach) for n in study.lengths]
    show.append(("verdict", "verdict", lambda v: f"**{v}**"))
    header = "| " + " | ".join(title for _, title, _ in show) + " |\n"
    header += (
        "|"
        + "|".join("---" if k in {"variant", "verdict", "vanished"} else "---:" for k, _, _ in show)
        + "|\n"
    )
    lines = []
    for p in points:
        lines.append(
            "| "
            + " | ".join(fmt(p[k]) if p.get(k) is not None else "n/a" for k, _, fmt in show)
            + " |"
        )
    unit = "characters" if study.lengths else "training samples"
    size = f"{study.train_size} {unit}" if study.train_size else "the full training split"
    if study.lengths:
        size += (
            ", in windows of the dataset's length. Reach at n characters: the norm of the"
            " gradient of a window's last loss with respect to its first character over that"
            " with respect to its last, in validation windows of n characters; **bold**: below"
            f" {diagnosis.VANISHED_REACH:g}, float32's resolution: vanished"
        )
    return (
        f"# Study `{study.name}` ({study.kind})\n\n"
        f"`{study.base.model}` on `{study.dataset}` with {size}; one row per variant. "
        "Verdict rules: `src/deepfit/diagnosis.py` and the README.\n\n"
        + header
        + "\n".join(lines)
        + "\n\nReasons:\n\n"
        + "\n".join(f"- {p['variant']}: {p['reasons']}" for p in points)
        + f"\n\n![{study.name}](../figures/studies/{study.name}.png)\n"
    )


def _g(value: float) -> str:
    return f"{value:.3g}"


def _reach(value: float) -> str:
    """A reach, in bold when the gradient vanished."""
    return f"**{value:.2g}**" if value < diagnosis.VANISHED_REACH else f"{value:.2g}"


def _f(value: float) -> str:
    return f"{value:.3f}"

"""One trial: the base run with the sampled values, trained as an MLflow child run of the
search, pruned on its validation curve, judged like every run."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deepfit import tracking
from deepfit.config import TuningConfig
from deepfit.evaluate import diagnosis
from deepfit.tune.space import suggest

if TYPE_CHECKING:
    import optuna

    from deepfit.config import Params, RunConfig
    from deepfit.data import Prepared

log = logging.getLogger(__name__)

STATE_TAG = "deepfit.trial.state"


@dataclass
class TrialContext:
    """What every trial of a worker shares: the search, params, data and the parent run."""

    search: TuningConfig
    params: Params
    data: Prepared
    parent_run_id: str | None
    reference: tuple[float, float] = field(init=False)

    def __post_init__(self) -> None:
        task = self.data.spec.task
        self.reference = diagnosis.reference_losses(self.data.train[1], self.data.val[1], task)


@dataclass(frozen=True)
class TrialResult:
    state: str  # complete | pruned
    value: float | None
    history: dict[str, list[float]]
    verdict: str


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> TrialResult:
    """Sample, build, fit and judge one trial; its values, curve and verdict go to the trial's
    user attributes and to its MLflow child run. Raises on a failure (NaN, an error)."""
    import mlflow

    from deepfit.train.run import build_model

    search = ctx.search
    values = suggest(trial, search.space)
    trial.set_user_attr("deepfit.values", values)
    run = search.trial_run(values)
    model = build_model(run, ctx.params, ctx.data)
    with tracking.start_run(
        run,
        ctx.params.mlflow.experiment,
        trial_params(run, ctx.params, search, values, trial.number),
        name=f"{search.name}/trial-{trial.number:03d}",
        tags=trial_tags(search, trial.number),
        nested=mlflow.active_run() is not None,  # the parent, in a one-worker search
        parent_run_id=ctx.parent_run_id,
    ) as active:
        trial.set_user_attr("deepfit.mlflow_run_id", active.info.run_id)
        history, state = _fit(trial, model, run, ctx)
        return _finish(trial, ctx, history, state, int(model.count_params()))


def trial_params(
    run: RunConfig, params: Params, search: TuningConfig, values: dict[str, Any], number: int
) -> dict[str, Any]:
    """The trial's MLflow params: the run's as every run logs them, the sampled values under
    their params.yaml paths (``runs.<base>.<key>``), and the trial number."""
    from deepfit.train.run import run_params

    sampled = {f"runs.{search.base.name}.{key}": value for key, value in values.items()}
    return {**run_params(run, params), **sampled, "tune.trial": number}


def trial_tags(search: TuningConfig, number: int) -> dict[str, str]:
    """Child-run tags: the study (so ``compare`` lists trials only with --studies), the trial."""
    return {
        "deepfit.study": f"tune:{search.name}",
        "deepfit.tuning": search.name,
        "deepfit.trial": str(number),
        "deepfit.run": f"tune:{search.name}/{number}",
        "deepfit.base_run": search.base.name,
    }


def _fit(
    trial: optuna.Trial, model: Any, run: RunConfig, ctx: TrialContext
) -> tuple[dict[str, list[float]], str]:
    """Fit with the divergence guard, early stopping, MLflow curves and the pruning callback;
    the curve is kept up to the pruned (or failed) epoch."""
    import mlflow
    import optuna

    from deepfit.train.callbacks import DivergenceGuard, MlflowMetrics
    from deepfit.train.loop import fit, standard_callbacks
    from deepfit.tune.pruning import PruningCallback

    pruning = PruningCallback(trial, ctx.search.metric)
    callbacks = [
        DivergenceGuard(),  # first: a NaN epoch is never logged or reported
        *standard_callbacks(run.train, generative=False),
        MlflowMetrics(synchronous=True),  # before pruning: the pruned epoch is logged too
        pruning,
    ]
    state = "complete"
    try:
        fit(model, ctx.data, run.train, callbacks, False, ctx.params.seeds.train)
    except optuna.TrialPruned:
        state = "pruned"
    except BaseException:
        trial.set_user_attr("deepfit.history", pruning.history)
        mlflow.set_tag(STATE_TAG, "failed")
        raise
    return pruning.history, state


def _finish(
    trial: optuna.Trial, ctx: TrialContext, history: dict[str, list[float]], state: str, size: int
) -> TrialResult:
    import mlflow

    metric = "accuracy" if ctx.data.spec.task == "classification" else None
    fit = diagnosis.diagnose(history, ctx.params.fit, ctx.reference, metric=metric)
    value = trial_value(history, ctx.search.metric) if state == "complete" else None
    fit_metrics, fit_tags = diagnosis.mlflow_payload(fit, {})
    epochs = len(history.get("loss", []))
    extra = {"n_params": size, "epochs_run": epochs}
    if value is not None:
        extra["tune.value"] = value
    mlflow.log_metrics({**fit_metrics, **extra})
    mlflow.set_tags({**fit_tags, STATE_TAG: state})
    trial.set_user_attr("deepfit.history", history)
    trial.set_user_attr("deepfit.verdict", fit["verdict"])
    # The pruned epoch has no progress line (the pruning callback stops the fit before it is
    # printed), so the line names it.
    ended = f"pruned at epoch {epochs}" if state == "pruned" else f"{state}, {epochs} epochs"
    log.info(
        "trial %d: %s, %s %s, fit %s",
        trial.number,
        ended,
        ctx.search.metric,
        _brief(value if value is not None else _last(history, ctx.search.metric)),
        fit["verdict"],
    )
    return TrialResult(state, value, history, fit["verdict"])


def trial_value(history: dict[str, list[float]], metric: str) -> float:
    """``metric`` at the kept epoch (lowest validation loss: the weights early stopping keeps)."""
    val = history["val_loss"]
    best = min(range(len(val)), key=val.__getitem__)
    return float(history[metric][best])


def _last(history: dict[str, list[float]], metric: str) -> float:
    values = history.get(metric) or [math.nan]
    return values[-1]


def _brief(value: float) -> str:
    return f"{value:.4g}"

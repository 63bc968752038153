"""The search space in Optuna's terms: suggesting a trial's values, grid points, the sampler
and the pruner a search names."""

from __future__ import annotations

import itertools
import json
import random
from typing import TYPE_CHECKING, Any

from deepfit.config import Categorical, FloatRange, IntRange, SpaceParam, TuningConfig

if TYPE_CHECKING:
    import optuna

# Optuna stores categorical choices only as None, bool, int, float or str; lists (layer widths)
# are stored as their JSON text and decoded back.
_SCALARS = (type(None), bool, int, float, str)
# Median pruning waits for this many finished trials and epochs before it stops anything.
MEDIAN_STARTUP_TRIALS = 3
MEDIAN_WARMUP_EPOCHS = 2


def _encoded(param: Categorical) -> bool:
    return not all(isinstance(choice, _SCALARS) for choice in param.choices)


def choices(param: Categorical) -> list[Any]:
    """The choices as Optuna stores them."""
    if _encoded(param):
        return [json.dumps(choice) for choice in param.choices]
    return list(param.choices)


def decode(param: SpaceParam, value: Any) -> Any:
    """A stored value back as params.yaml writes it (a float on a step grid rounded)."""
    if isinstance(param, Categorical):
        return json.loads(value) if _encoded(param) else value
    if isinstance(param, FloatRange) and param.step is not None:
        return round(float(value), 10)
    return value


def suggest(trial: optuna.Trial, space: dict[str, SpaceParam]) -> dict[str, Any]:
    """Sample one value per space key (a retried or enqueued trial gets its fixed values)."""
    values: dict[str, Any] = {}
    for key, param in space.items():
        if isinstance(param, FloatRange):
            raw = trial.suggest_float(key, param.low, param.high, log=param.log, step=param.step)
        elif isinstance(param, IntRange):
            raw = trial.suggest_int(key, param.low, param.high, step=param.step, log=param.log)
        else:
            raw = trial.suggest_categorical(key, choices(param))
        values[key] = decode(param, raw)
    return values


def decoded(space: dict[str, SpaceParam], stored: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored params as params.yaml values."""
    return {k: decode(space[k], v) for k, v in stored.items() if k in space}


def grid_points(search: TuningConfig) -> list[dict[str, Any]]:
    """Every point of a grid search in stored form, shuffled by the search's seed."""
    axes = {key: _axis(param) for key, param in search.space.items()}
    points = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    random.Random(search.seed).shuffle(points)
    return points


def _axis(param: SpaceParam) -> list[Any]:
    if isinstance(param, Categorical):
        return choices(param)
    if isinstance(param, IntRange):
        return list(range(param.low, param.high + 1, param.step))
    assert param.step is not None  # params validation: a grid's float range has a step
    count = int((param.high - param.low) / param.step + 1e-9) + 1
    return [round(param.low + i * param.step, 10) for i in range(count)]


def sampler(search: TuningConfig, trials_before: int) -> optuna.samplers.BaseSampler:
    """The sampler for the next trial, seeded from the search's seed and the number of trials
    before it: a trial's values depend only on the seed and the study's history, so one worker
    repeats a search exactly, also after a resume. (Mixed, not added: seeds 1 and 2 would
    otherwise draw the same trials one place apart.) A grid's points are enqueued."""
    import numpy as np
    import optuna

    seed = int(np.random.SeedSequence([search.seed, trials_before]).generate_state(1)[0])
    if search.sampler == "tpe":
        startup = max(3, min(10, search.trials // 4))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.RandomSampler(seed=seed)


def pruner(search: TuningConfig) -> optuna.pruners.BasePruner:
    """The pruner a search names; it reads the metric after every epoch."""
    import optuna

    if search.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_EPOCHS
        )
    if search.pruner == "hyperband":
        epochs = search.trial_run({}).train.epochs
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()

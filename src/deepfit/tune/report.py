"""A search's report: per-trial states, values, params, durations and verdicts, the best
trial, and the ``dvc exp run -S ...`` line that applies it."""

from __future__ import annotations

import math
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from deepfit.outputs import markdown_table
from deepfit.tune.space import decoded

if TYPE_CHECKING:
    import optuna

    from deepfit.config import TuningConfig

STATES = ("complete", "pruned", "failed", "running", "waiting")


def summarise(study: optuna.Study, search: TuningConfig) -> dict[str, Any]:
    """The report's content: the search, the best trial and every trial in number order."""
    trials = [trial_row(t, search) for t in study.get_trials(deepcopy=False)]
    complete = [t for t in trials if t["state"] == "complete" and t["value"] is not None]
    sign = 1 if search.direction == "minimize" else -1
    best = min(complete, key=lambda t: sign * t["value"]) if complete else None
    return {
        "search": search.name,
        "base": search.base.name,
        "metric": search.metric,
        "direction": search.direction,
        "sampler": {"name": search.sampler, "seed": search.seed},
        "pruner": search.pruner,
        "trials_budget": search.trials,
        "counts": {s: sum(1 for t in trials if t["state"] == s) for s in STATES[:3]},
        "best": _best(best, search),
        "importances": importances(study, search),
        "trials": trials,
    }


def _best(row: dict[str, Any] | None, search: TuningConfig) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "trial": row["number"],
        "value": row["value"],
        "params": row["params"],
        "apply": " ".join(shlex.quote(part) for part in apply_command(search.base.name, row)),
    }


def trial_row(trial: optuna.trial.FrozenTrial, search: TuningConfig) -> dict[str, Any]:
    """One trial of the report (values as params.yaml writes them)."""
    attrs = trial.user_attrs
    state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(
        trial.state.name, trial.state.name.lower()
    )
    duration = trial.duration.total_seconds() if trial.duration else None
    history = attrs.get("deepfit.history") or {}
    row = {
        "number": trial.number,
        "state": state,
        "value": _finite(trial.value),
        "params": decoded(search.space, trial.params),
        "duration": round(duration, 2) if duration is not None else None,
        "epochs": len(history.get("loss", [])),
        "verdict": attrs.get("deepfit.verdict"),
        "mlflow_run_id": attrs.get("deepfit.mlflow_run_id"),
    }
    if "deepfit.error" in attrs:
        row["error"] = attrs["deepfit.error"]
    retried = trial.system_attrs.get("failed_trial")
    if retried is not None:
        row["retry_of"] = retried
    return row


def importances(study: optuna.Study, search: TuningConfig) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) over the complete trials; empty with too few."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        found = optuna.importance.get_param_importances(study, params=list(search.space))
    except (RuntimeError, ValueError):  # every trial alike in some key: nothing to attribute
        return {}
    return {key: round(float(value), 4) for key, value in found.items()}


def apply_command(base: str, row: dict[str, Any]) -> list[str]:
    """``dvc exp run -S ++runs.<base>.<key>=<value> ... report`` for a trial's values (``++``
    adds a key the run inherits, such as its learning rate, or overrides one it has). The
    target ``report`` trains and evaluates the run, and leaves the search itself alone."""
    command = ["dvc", "exp", "run"]
    for key, value in row["params"].items():
        command += ["-S", f"++runs.{base}.{key}={_yaml_value(value)}"]
    return [*command, "report"]


def _yaml_value(value: Any) -> str:
    # DVC reads -S values as YAML: a flow-style list, a plain number or name.
    return (
        yaml.safe_dump(value, default_flow_style=True, width=1000)
        .strip()
        .removesuffix("\n...")
        .strip()
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def markdown_report(
    search: TuningConfig, summary: dict[str, Any], figures: list[Path], folder: Path
) -> str:
    """The report as markdown: best trial, how to apply it, one row per trial, the figures."""
    keys = list(search.space)
    header = ["trial", "state", search.metric, *keys, "epochs", "seconds", "fit"]
    rows = [
        [
            t["number"],
            t["state"],
            _num(t["value"]),
            *(_cell(t["params"].get(k)) for k in keys),
            t["epochs"],
            _num(t["duration"]),
            t["verdict"] or "n/a",
        ]
        for t in summary["trials"]
    ]
    align = ["r", "l", "r", *("l" for _ in keys), "r", "r", "l"]
    counts = ", ".join(f"{n} {state}" for state, n in summary["counts"].items())
    best = summary["best"]
    lines = [
        f"# Search `{search.name}`: `{search.base.name}` ({search.base.model} on "
        f"{search.base.dataset})\n",
        f"{search.sampler} sampler (seed {search.seed}), {search.pruner} pruner, "
        f"{search.trials} trials: {counts}. Chosen by {search.metric} "
        f"({search.direction}) on the validation split.\n",
    ]
    if best:
        lines.append(
            f"Best: trial {best['trial']}, {search.metric} {best['value']:.4g}, "
            f"{_cell(best['params'])}. Apply it:\n\n    {best['apply']}\n"
        )
    lines.append(markdown_table(header, align, rows))
    for path in figures:
        rel = os.path.relpath(path, folder)
        lines.append(f"![{path.stem}]({rel})\n")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return _yaml_value(value).replace("|", "\\|")

"""``deepfit promote``: register a run's logged model as ``deepfit-<run>`` with the alias
``champion``, its evidence (key metric, strongest baseline, verdicts, DVC experiment, git commit)
as tags of the model version.

Runs are read as ``deepfit compare`` reads them (``compare.load_runs``); the best finished run
per run name is chosen by its key test metric and direction (``evaluate.metrics.KEY_METRICS``),
among the runs evaluated on the test split of the name's newest run
(``compare.on_newest_split``).
Imported only by the ``promote`` subcommand: it pulls in pandas and MLflow.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from deepfit.report.compare import CompareError, best_per, load_runs, on_newest_split

log = logging.getLogger(__name__)

ALIAS = "champion"
PREFIX = "deepfit-"  # registered model name: deepfit-<run>


class PromoteError(CompareError):
    """A problem the user can fix from the one-line message."""


@dataclass(frozen=True)
class Promoted:
    """One registered model version and what it was chosen on."""

    model: str
    version: str
    run_id: str
    run_name: str
    tags: dict[str, str]
    new: bool  # False when the alias already pointed at this run's version


def promote(
    tracking_uri: str, experiment: str, run: str | None = None, run_id: str | None = None
) -> list[Promoted]:
    """Register the chosen runs' models and point ``champion`` at them: the best finished run
    per run name, only those of ``run``, or the one MLflow run ``run_id``."""
    frame = load_runs(tracking_uri, experiment)
    rows = choose(frame, run=run, run_id=run_id)
    return [register(tracking_uri, row) for _, row in rows.iterrows()]


def choose(frame: pd.DataFrame, run: str | None = None, run_id: str | None = None) -> pd.DataFrame:
    """The rows to promote: one per run name, the best finished one by its key metric."""
    if run_id is not None:
        rows = frame[frame["run_id"] == run_id]
        if rows.empty:
            raise PromoteError(f"no MLflow run with id {run_id} in the experiment")
        status = rows.iloc[0]["status"]
        if status != "FINISHED":
            raise PromoteError(f"MLflow run {run_id} is {status}; only finished runs are promoted")
        if not _text(rows.iloc[0]["run"]):
            raise PromoteError(f"MLflow run {run_id} has no deepfit.run tag: not a deepfit run")
        return rows
    if "tags.deepfit.study" in frame:
        frame = frame[frame["tags.deepfit.study"].isna()]  # variants of a study are not runs
    if run is not None:
        frame = frame[frame["run"] == run]
        if frame.empty:
            raise PromoteError(f"no MLflow run of deepfit run {run!r} in the experiment")
    frame = frame[frame["run"].notna()]
    frame = frame[on_newest_split(frame, ["run", "dataset"])]  # not a metric on older data
    # A run name evaluated on two datasets (a DVC experiment changed it) keeps its best row.
    rows = best_per(frame, "run").drop_duplicates("run")
    if rows.empty:
        what = f"of {run!r} " if run else ""
        raise PromoteError(
            f"no finished and evaluated run {what}to promote ({len(frame)} runs found); "
            "run the pipeline first (dvc repro)"
        )
    return rows.sort_values("run")


def evidence_tags(row: pd.Series) -> dict[str, str]:
    """What the version was chosen on, as registry tags (strings, as MLflow stores them)."""
    baseline = row.get("tags.deepfit.baseline.strongest")
    return {
        "deepfit.run": str(row["run"]),
        "deepfit.model": _text(row.get("model")),
        "deepfit.dataset": _text(row.get("dataset")),
        "deepfit.mlflow_run_name": str(row["name"]),
        "deepfit.metric": str(row["metric"]),
        "deepfit.metric.value": _number(row["value"]),
        "deepfit.baseline": _text(baseline),
        "deepfit.baseline.value": _number(row["baseline"]),
        "deepfit.baseline.verdict": _text(row.get("tags.deepfit.baseline.verdict")),
        "deepfit.fit.verdict": _text(row.get("fit")),
        "dvc_exp_name": _text(row.get("exp"), "workspace"),
        "git_commit": _text(row.get("tags.git_commit")),
    }


def register(tracking_uri: str, row: pd.Series) -> Promoted:
    """Register ``runs:/<id>/model`` as ``deepfit-<run>`` (a new version unless the alias
    already points at this run) and set the alias."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name, run_id, tags = f"{PREFIX}{row['run']}", str(row["run_id"]), evidence_tags(row)
    current = _champion(client, name)
    if current is not None and current.run_id == run_id:
        return Promoted(name, str(current.version), run_id, str(row["name"]), tags, new=False)
    # MLflow 3 warns that runs:/<id>/model "has no artifacts" before it finds the run's logged
    # model (models:/m-…) and registers that: the expected path for every deepfit run.
    logging.getLogger("mlflow.tracking._model_registry.fluent").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        # MLflow's own call: it resolves runs:/ to the run's logged model and creates the name.
        version = mlflow.register_model(f"runs:/{run_id}/model", name, tags=tags)
        client.set_registered_model_alias(name, ALIAS, version.version)
    except MlflowException as exc:
        first = (str(exc.message).strip().splitlines() or [""])[0][:300]
        raise PromoteError(f"cannot register run {run_id} as {name}: {first}") from None
    log.info("registered %s version %s (run %s) as %s", name, version.version, run_id, ALIAS)
    return Promoted(name, str(version.version), run_id, str(row["name"]), tags, new=True)


def _champion(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:  # no such model or alias yet
        return None


def _text(value: Any, default: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return str(value)


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value))

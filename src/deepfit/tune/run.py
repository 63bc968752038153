"""tune@<search>: run a search and write its report.

``run_search`` prepares the study (create, resume or reset), opens the MLflow parent run
``tune:<search>``, runs the trials in this process and N - 1 more worker processes, and writes
``reports/tuning/<search>.json`` and ``.md`` and the figures under
``reports/figures/tuning/<search>/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfit import tracking
from deepfit.outputs import atomic_dir, write_json, write_text
from deepfit.tune import TuneError
from deepfit.tune import storage as stores
from deepfit.tune.figures import search_figures
from deepfit.tune.report import markdown_report, summarise
from deepfit.tune.worker import spawn, work, worker_command

if TYPE_CHECKING:
    import optuna

    from deepfit.config import Params, TuningConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOptions:
    """How to run a search: storage URL, local worker processes, join an existing study."""

    storage: str
    workers: int = 1
    join: bool = False
    params_file: str = "params.yaml"


@dataclass(frozen=True)
class TuningOutputs:
    report: Path
    table: Path
    figures: Path

    @classmethod
    def for_search(cls, name: str, root: Path = Path()) -> TuningOutputs:
        return cls(
            report=root / "reports" / "tuning" / f"{name}.json",
            table=root / "reports" / "tuning" / f"{name}.md",
            figures=root / "reports" / "figures" / "tuning" / name,
        )


def run_search(
    search: TuningConfig,
    params: Params,
    options: SearchOptions,
    out: TuningOutputs,
    setup: Callable[[int], None],
) -> dict[str, Any] | None:
    """Run the search to its budget and write its report; None for a joining worker.

    This process is one of the ``options.workers`` workers; the others are processes started
    once the study is ready. ``setup(threads)`` prepares this process's TensorFlow before its
    first trial (0 threads: TensorFlow's default)."""
    storage = stores.open_storage(options.storage)
    stamp = stores.fingerprint(search, params)
    study, resumed = stores.prepare_study(search, storage, stamp, options.join)
    if resumed and not options.join:
        log.info(
            "%s: resuming the study (%d of %d trials done)",
            search.name,
            stores.budget_used(study),
            search.trials,
        )
    # The other workers start (and import TensorFlow) while this process opens the parent run.
    helpers = _start_helpers(search, options)
    setup(worker_threads(options.workers))
    if options.join:
        _work_beside(helpers, search, params, study, study.user_attrs.get(stores.PARENT_RUN))
        return None
    with _parent_run(search, params, study) as parent_id:
        _work_beside(helpers, search, params, study, parent_id)
        summary = summarise(study, search)
        write_outputs(study, search, summary, out)
        _log_artifacts(out, summary)
    study.set_user_attr(stores.REPORTED, True)
    return summary


def worker_threads(workers: int) -> int:
    """TensorFlow threads of each of ``workers`` processes on this machine: its cores shared
    out (0, TensorFlow's own choice, for a single worker)."""
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0


def _start_helpers(search: TuningConfig, options: SearchOptions) -> list[Any]:
    """The worker processes beside this one: ``options.workers - 1`` of them."""
    if options.workers == 1:
        return []
    threads = worker_threads(options.workers)
    command = worker_command(options.params_file, search.name, options.storage, threads)
    log.info(
        "%s: %d workers (this process and %d more), %d TensorFlow thread(s) each",
        search.name,
        options.workers,
        options.workers - 1,
        threads,
    )
    return spawn([command] * (options.workers - 1))


def _work_beside(
    helpers: list[Any],
    search: TuningConfig,
    params: Params,
    study: optuna.Study,
    parent_id: str | None,
) -> None:
    """This process's trials, then wait for the other workers. When this process stops early
    (Ctrl-C, an error), each of them gets one SIGINT: it fails its trial, queues it again and
    ends."""
    try:
        work(search, params, study, parent_id)
    except BaseException:
        _interrupt(helpers)
        raise
    _wait(helpers)


def _interrupt(workers: list[Any]) -> None:
    for w in workers:
        with contextlib.suppress(ProcessLookupError):
            w.send_signal(signal.SIGINT)
    for w in workers:
        w.wait()


def _wait(workers: list[Any]) -> None:
    """Wait for the worker processes; on Ctrl-C pass it on to each (they fail their trials
    and queue them again) and wait for them to finish."""
    try:
        codes = [w.wait() for w in workers]
    except KeyboardInterrupt:
        _interrupt(workers)
        raise
    if any(codes):
        raise TuneError(
            f"{sum(1 for c in codes if c)} of {len(codes)} workers failed "
            f"(exit {max(codes)}); rerun to continue the search"
        )


@contextlib.contextmanager
def _parent_run(search: TuningConfig, params: Params, study: optuna.Study) -> Iterator[str]:
    """The MLflow parent run: the study's own when it is resumed, else a new one."""
    import mlflow
    from mlflow.exceptions import MlflowException

    experiment = params.mlflow.experiment
    run_id = study.user_attrs.get(stores.PARENT_RUN)
    if run_id:
        tracking.connect(experiment)
        try:
            mlflow.get_run(run_id)
        except MlflowException:
            run_id = None
    if run_id:
        with tracking.resume_run(run_id, experiment, f"tune:{search.name}") as active:
            yield active.info.run_id
        return
    tags = {
        "deepfit.study": f"tune:{search.name}",
        "deepfit.tuning": search.name,
        "deepfit.run": f"tune:{search.name}",
    }
    with tracking.start_run(
        search.base, experiment, search_params(search), name=f"tune:{search.name}", tags=tags
    ) as active:
        study.set_user_attr(stores.PARENT_RUN, active.info.run_id)
        yield active.info.run_id


def search_params(search: TuningConfig) -> dict[str, Any]:
    """The parent run's MLflow params: the search as declared."""
    flat: dict[str, Any] = {
        "tuning.base": search.base.name,
        "tuning.trials": search.trials,
        "tuning.timeout": search.timeout,
        "tuning.sampler.name": search.sampler,
        "tuning.sampler.seed": search.seed,
        "tuning.pruner": search.pruner,
        "tuning.metric": search.metric,
    }
    for key, param in search.space.items():
        spec = {k: v for k, v in param.model_dump().items() if v is not None}
        flat[f"tuning.space.{key}"] = str(spec)
    flat.update({f"tuning.fixed.{k}": v for k, v in search.fixed.items()})
    return flat


def write_outputs(
    study: optuna.Study, search: TuningConfig, summary: dict[str, Any], out: TuningOutputs
) -> None:
    """The JSON report, the markdown table and the figures."""
    with atomic_dir(out.figures) as staged:
        figures = [out.figures / p.name for p in search_figures(study, search, summary, staged)]
    write_json(out.report, summary)
    write_text(out.table, markdown_report(search, summary, figures, out.table.parent))


def _log_artifacts(out: TuningOutputs, summary: dict[str, Any]) -> None:
    import mlflow

    counts = {f"tune.trials_{state}": n for state, n in summary["counts"].items()}
    best = summary["best"]
    mlflow.log_metrics({**counts, **({"tune.best_value": best["value"]} if best else {})})
    mlflow.log_artifact(str(out.report), artifact_path="tuning")
    mlflow.log_artifact(str(out.table), artifact_path="tuning")
    mlflow.log_artifacts(str(out.figures), artifact_path="tuning/figures")

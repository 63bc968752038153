"""tune@<search>: params.yaml tuning.<search> + data/prepared/<dataset>/ ->
reports/tuning/<search>.json and .md, reports/figures/tuning/<search>/, and an MLflow parent run
``tune:<search>`` with one child run per trial. Also the worker processes of ``deepfit tune``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from deepfit.config import ConfigError
from deepfit.stages._cli import deterministic_ops, parser, run_program, stage

if TYPE_CHECKING:
    from deepfit.config import Params, TuningConfig


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__)
    cli.add_argument("--search", required=True, help="a name declared under tuning:")
    cli.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    cli.add_argument("--storage", help="study database URL (default: a sqlite file in .dvc/tmp)")
    cli.add_argument("--join", action="store_true", help="add trials to an existing study")
    cli.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    cli.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = cli.parse_args(argv)
    with stage(f"tune@{args.search}") as log:
        from deepfit.config import load_params

        params = load_params(args.params)  # validated before Optuna or TensorFlow is imported
        search = params.search(args.search)
        if args.workers < 1:
            raise ConfigError(f"--workers: expected 1 or more worker processes, not {args.workers}")

        from deepfit.tune import storage

        url = storage.resolve(args.storage, search.name)  # unreachable: one line, at once
        if args.worker:
            _worker(search, params, url, args.threads)
            return 0

        from deepfit.tune.run import SearchOptions, TuningOutputs, run_search

        options = SearchOptions(url, args.workers, args.join, args.params)
        outputs = TuningOutputs.for_search(search.name)
        summary = run_search(search, params, options, outputs, setup=_tensorflow)
        if summary and summary["best"]:
            best = summary["best"]
            log.info(
                "%s: best trial %d, %s %.4g; apply: %s",
                search.name,
                best["trial"],
                search.metric,
                best["value"],
                best["apply"],
            )
    return 0


def _worker(search: TuningConfig, params: Params, url: str, threads: int) -> None:
    """One worker process of ``deepfit tune --workers N``: trials until the budget is used."""
    from deepfit.tune import storage
    from deepfit.tune.worker import work

    _tensorflow(threads)
    study = storage.load(search, storage.open_storage(url))
    work(search, params, study, None, wait_parent=True)


def _tensorflow(threads: int) -> None:
    """Op determinism, and ``threads`` TensorFlow threads when given (0: its default)."""
    deterministic_ops()
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


if __name__ == "__main__":
    run_program(main)

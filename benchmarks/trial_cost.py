"""Where a tuning trial's time goes: the first call of the compiled training and validation
functions (tracing and graph optimisation, paid once per trial) against a steady epoch.

It fits the search's base run with a few widths, as a trial does (deepfit's model builder and
input pipeline, no MLflow, no pruning), and prints one line per fit. Why H1 (README, "Targets
not met") cannot reach 60 % on digits: pruning saves only the steady epochs.

Usage (from a repository copy with digits prepared, e.g. bench.py's ``tuning_repo``):
    python benchmarks/trial_cost.py [--search fnn] [--params params.yaml] [--epochs 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras


class Marks(keras.callbacks.Callback):
    """Seconds from the start of ``fit`` to the end of the first training call, of the first
    validation call, and of each epoch."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter()
        self.first_train: float | None = None
        self.first_val: float | None = None
        self.epochs: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.first_train is None:
            self.first_train = time.perf_counter() - self.start

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.first_val is None:
            self.first_val = time.perf_counter() - self.start

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs.append(time.perf_counter() - self.start)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--search", default="fnn")
    cli.add_argument("--params", default="params.yaml")
    cli.add_argument("--epochs", type=int, default=20)
    args = cli.parse_args(argv)

    from deepfit.config import load_params
    from deepfit.data import load_prepared
    from deepfit.train.loop import fit
    from deepfit.train.run import build_model

    params = load_params(args.params)
    search = params.tuning[args.search]
    data = load_prepared(Path("data/prepared") / search.base.dataset)
    fixed = {"activation": "relu", "dropout": 0.2, "train.epochs": args.epochs}
    for units in ([128], [256], [512, 256], [128]):
        run = search.trial_run({**fixed, "units": units})
        started = time.perf_counter()
        model = build_model(run, params, data)
        built = time.perf_counter() - started
        marks = Marks()
        fit(model, data, run.train, [marks], False, params.seeds.train)
        steady = (marks.epochs[-1] - marks.epochs[0]) / (len(marks.epochs) - 1)
        print(
            f"units {units}: build {built:.2f} s; first training call {marks.first_train:.2f} s, "
            f"first validation call done at {marks.first_val:.2f} s, first epoch "
            f"{marks.epochs[0]:.2f} s; then {1000 * steady:.0f} ms per epoch",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

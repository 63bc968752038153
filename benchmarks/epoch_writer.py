"""One of S2's concurrent writers: per-epoch metrics to a tracking server, as training logs them.

Opens an MLflow run named ``--name`` in experiment ``--experiment`` (``MLFLOW_TRACKING_URI``),
writes ``--ready``, waits for ``--go`` (so that every writer starts logging at once), then calls
deepfit's own per-epoch callback (``MlflowMetrics.on_epoch_end``: ``mlflow.log_metrics(...,
step=epoch, synchronous=False)``) for ``--epochs`` epochs back to back with four metrics, timing
each call, and ``on_train_end`` (MLflow's flush of its queue). Prints one JSON line: the run id,
every call's seconds and the flush's seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--name", required=True)
    cli.add_argument("--experiment", required=True)
    cli.add_argument("--epochs", type=int, default=200)
    cli.add_argument("--ready", type=Path, required=True)
    cli.add_argument("--go", type=Path, required=True)
    args = cli.parse_args(argv)

    import mlflow

    from deepfit.train.callbacks import MlflowMetrics

    mlflow.set_experiment(args.experiment)
    callback = MlflowMetrics()
    calls = []
    with mlflow.start_run(run_name=args.name) as active:
        args.ready.touch()
        while not args.go.exists():
            time.sleep(0.01)
        callback.on_train_begin()
        for epoch in range(args.epochs):
            loss = 1.0 / (epoch + 1)
            logs = {"loss": loss, "accuracy": 1 - loss, "val_loss": math.sqrt(loss), "lr": 1e-3}
            started = time.perf_counter()
            callback.on_epoch_end(epoch, logs)
            calls.append(time.perf_counter() - started)
        started = time.perf_counter()
        callback.on_train_end()
        flush = time.perf_counter() - started
    result = {"name": args.name, "run_id": active.info.run_id, "calls": calls, "flush": flush}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

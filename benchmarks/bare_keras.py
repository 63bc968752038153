"""The bare Keras script P1 compares the pipeline's training with.

Same model (built by deepfit's model builder, so it is layer for layer the run's model), same
optimizer, loss, batch size, steps per execution, epochs, seed and data as ``train@<run>``;
everything else is plain Keras: ``compile`` and ``fit(verbose=0)`` with no callbacks, no
tracking, no op determinism. ``--steps-per-execution 1`` gives Keras' default instead.
Prints one JSON line: fit seconds, epochs run and training samples.

Usage (from the repository root, after ``prepare``):
    python benchmarks/bare_keras.py --run fnn [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--run", required=True)
    cli.add_argument("--params", default="params.yaml")
    cli.add_argument(
        "--steps-per-execution",
        type=int,
        help="override the run's train.steps_per_execution (1: Keras' default)",
    )
    args = cli.parse_args(argv)

    from deepfit.config import load_params
    from deepfit.data import load_prepared
    from deepfit.models import get_spec

    params = load_params(args.params)
    run = params.run(args.run)
    data = load_prepared(Path("data/prepared") / run.dataset)

    import keras

    from deepfit.training import make_optimizer

    keras.utils.set_random_seed(params.seeds.train)
    model = get_spec(run.model).build(run.arch, data.spec)
    classification = data.spec.task == "classification"
    steps = -(-len(data.train[0]) // run.train.batch_size)
    model.compile(
        optimizer=make_optimizer(run.train.optimizer, run.train.schedule, steps * run.train.epochs),
        loss="sparse_categorical_crossentropy" if classification else "mse",
        metrics=["accuracy" if classification else "mae"],
        steps_per_execution=args.steps_per_execution or run.train.steps_per_execution,
    )
    started = time.perf_counter()
    history = model.fit(
        *data.train,
        validation_data=data.val,
        epochs=run.train.epochs,
        batch_size=run.train.batch_size,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    result = {
        "run": run.name,
        "seconds": seconds,
        "epochs": len(history.history["loss"]),
        "samples": len(data.train[0]),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The bare Keras script P1 compares the pipeline's training with.

Same model (built by deepfit's model builder, so it is layer for layer the run's model), same
optimizer, loss, batch size, steps per execution, input pipeline (deepfit's ``tf.data``
batches), epochs, seed and data as ``train@<run>``; everything else is plain Keras: ``compile``
and ``fit(verbose=0)`` with no callbacks, no tracking, no op determinism.

``--keras-defaults`` is the script a user would write first: NumPy arrays into ``fit`` and
``steps_per_execution=1``.
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
        "--keras-defaults",
        action="store_true",
        help="NumPy arrays into fit and steps_per_execution=1 instead of the run's settings",
    )
    args = cli.parse_args(argv)

    from deepfit.config import load_params
    from deepfit.data import load_prepared
    from deepfit.models import get_spec

    params = load_params(args.params)
    run = params.run(args.run)
    data = load_prepared(Path("data/prepared") / run.dataset)

    import keras

    from deepfit.train.loop import input_pipeline, make_optimizer

    keras.utils.set_random_seed(params.seeds.train)
    model = get_spec(run.model).build(run.arch, data.spec)
    classification = data.spec.task == "classification"
    steps = -(-len(data.train[0]) // run.train.batch_size)
    model.compile(
        optimizer=make_optimizer(run.train.optimizer, run.train.schedule, steps * run.train.epochs),
        loss="sparse_categorical_crossentropy" if classification else "mse",
        metrics=["accuracy" if classification else "mae"],
        steps_per_execution=1 if args.keras_defaults else run.train.steps_per_execution,
    )
    if args.keras_defaults:
        x, y = data.train
        inputs = {"x": x, "y": y, "validation_data": data.val, "batch_size": run.train.batch_size}
    else:
        train, val = input_pipeline(data, run.train.batch_size, params.seeds.train, False)
        inputs = {"x": train, "validation_data": val, "shuffle": False}
    started = time.perf_counter()
    history = model.fit(**inputs, epochs=run.train.epochs, verbose=0)
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

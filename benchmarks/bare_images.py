"""The bare Keras script D1 compares the pipeline's image-folder training with.

The script a user would write for a folder of class sub-folders:
``keras.utils.image_dataset_from_directory(...).cache().prefetch(tf.data.AUTOTUNE)``, decoding
the PNGs itself. Same model (built by deepfit's model builder from the prepared dataset's spec,
so it is layer for layer the run's model, its Rescaling layer included), optimizer, loss,
metrics, batch size, steps per execution, epochs and seed as ``train@<run>``; as many training
images (``validation_split`` = the run's val + test fractions) and as many validation batches.
Plain ``fit(verbose=0)`` with one callback that only times epochs (no per-batch hook).
Prints one JSON line: fit seconds, each epoch's seconds, epochs run and training samples.

Usage (from the repository root, after ``prepare`` of the run's dataset):
    python benchmarks/bare_images.py --run d1 [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras


class EpochTimes(keras.callbacks.Callback):
    """Each epoch's wall time, validation included (as deepfit's progress line)."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--run", required=True)
    cli.add_argument("--params", default="params.yaml")
    args = cli.parse_args(argv)

    from deepfit.config import load_params
    from deepfit.data import load_prepared
    from deepfit.models import get_spec

    params = load_params(args.params)
    run = params.run(args.run)
    cfg = params.datasets[run.dataset]
    data = load_prepared(Path("data/prepared") / run.dataset)  # its spec, for the same model
    n_train, n_val = len(data.train[0]), len(data.val[0])

    import tensorflow as tf

    from deepfit.train.loop import make_optimizer

    keras.utils.set_random_seed(params.seeds.train)
    batch = run.train.batch_size
    train, val = keras.utils.image_dataset_from_directory(
        Path("data/raw") / cfg.path,
        validation_split=cfg.val_fraction + cfg.test_fraction,
        subset="both",
        seed=params.seeds.split,
        image_size=tuple(cfg.image_size),
        batch_size=batch,
        color_mode=cfg.color_mode,
        verbose=False,
    )
    train = train.cache().prefetch(tf.data.AUTOTUNE)
    val = val.take(-(-n_val // batch)).cache().prefetch(tf.data.AUTOTUNE)
    model = get_spec(run.model).build(run.arch, data.spec)
    steps = -(-n_train // batch)
    model.compile(
        optimizer=make_optimizer(run.train.optimizer, run.train.schedule, steps * run.train.epochs),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=run.train.steps_per_execution,
    )
    epochs = EpochTimes()
    started = time.perf_counter()
    history = model.fit(
        train, validation_data=val, epochs=run.train.epochs, verbose=0, callbacks=[epochs]
    )
    seconds = time.perf_counter() - started
    result = {
        "run": run.name,
        "seconds": seconds,
        "epoch_seconds": epochs.seconds,
        "epochs": len(history.history["loss"]),
        "samples": n_train,
        "samples_seen": int(train.reduce(0, lambda n, b: n + tf.shape(b[0])[0]).numpy()),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

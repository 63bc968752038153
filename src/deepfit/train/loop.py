"""The training loop: optimizer from params, compile, built-in callbacks, tf.data input, fit.

Keras is imported inside functions so that importing this module (for example in tests of
helpers) stays cheap.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from deepfit.config import OptimizerConfig, TrainConfig

if TYPE_CHECKING:
    import keras
    import numpy as np
    import tensorflow as tf

    from deepfit.data import Prepared
    from deepfit.models.base import DataSpec

log = logging.getLogger(__name__)


def make_optimizer(cfg: OptimizerConfig, schedule: str, total_steps: int) -> keras.Optimizer:
    """Build the Keras optimizer named in params (sgd with momentum 0 is plain gradient descent)."""
    import keras

    learning_rate: Any = cfg.learning_rate
    if schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, total_steps)
    common: dict[str, Any] = {"learning_rate": learning_rate}
    if cfg.weight_decay is not None:
        common["weight_decay"] = cfg.weight_decay
    if cfg.clipnorm is not None:
        common["clipnorm"] = cfg.clipnorm
    if cfg.name == "sgd":
        return keras.optimizers.SGD(momentum=cfg.momentum or 0.0, nesterov=cfg.nesterov, **common)
    if cfg.name == "rmsprop":
        return keras.optimizers.RMSprop(momentum=cfg.momentum or 0.0, **common)
    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "nadam": keras.optimizers.Nadam,
        "adamax": keras.optimizers.Adamax,
        "adagrad": keras.optimizers.Adagrad,
    }
    if cfg.beta_1 is not None:
        common["beta_1"] = cfg.beta_1
    return classes[cfg.name](**common)


def compile_model(
    model: keras.Model, spec: DataSpec, cfg: TrainConfig, steps_per_epoch: int, generative: bool
) -> None:
    """Compile with the params' optimizer; loss and metrics follow the task.

    ``train.steps_per_execution`` batches run per compiled call: the same updates in the same
    order (identical results), with less Python and dispatch overhead per step.
    """
    import keras

    total = max(1, steps_per_epoch * cfg.epochs)
    execution = {"steps_per_execution": cfg.steps_per_execution}
    if generative:
        model.compile(
            d_optimizer=make_optimizer(cfg.optimizer, cfg.schedule, total),
            g_optimizer=make_optimizer(cfg.optimizer, cfg.schedule, total),
            **execution,
        )
    elif spec.task == "classification":
        model.compile(
            optimizer=make_optimizer(cfg.optimizer, cfg.schedule, total),
            loss="sparse_categorical_crossentropy",
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            **execution,
        )
    else:
        model.compile(
            optimizer=make_optimizer(cfg.optimizer, cfg.schedule, total),
            loss="mse",
            metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
            **execution,
        )
    build_training_state(model, generative)


def build_training_state(model: keras.Model, generative: bool) -> None:
    """Create the optimizer's variables now, before ``fit`` (the metrics, given as objects
    above, have theirs already).

    Without a distribution strategy Keras creates them inside the first trace of the training
    step, and a ``tf.function`` that created variables is traced a second time before it runs:
    two traces of every training graph (README, "Benchmarks", has what one saves). They are
    zeros either way, so the training is the same.
    """
    if generative:
        model.build_optimizers()
    elif model.built:
        model.optimizer.build(model.trainable_variables)


def standard_callbacks(cfg: TrainConfig, generative: bool) -> list[keras.callbacks.Callback]:
    """Built-in callbacks: keep the best validation epoch, LR schedule on plateau.

    (Divergence is caught by ``deepfit.train.callbacks.DivergenceGuard`` at the end of each epoch;
    Keras' ``TerminateOnNaN`` checks after every batch, which costs every step a wait.)
    """
    import keras

    callbacks: list[keras.callbacks.Callback] = []
    if generative:
        return callbacks  # a GAN's validation losses do not rank its samples; keep the last epoch
    # Always restore the best validation epoch (the "best checkpoint", kept in memory and saved
    # once); with early stopping off, patience beyond the epoch count means it never stops.
    patience = cfg.early_stopping.patience if cfg.early_stopping.enabled else cfg.epochs + 1
    callbacks.append(
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=patience,
            min_delta=cfg.early_stopping.min_delta,
            restore_best_weights=True,
            verbose=1,
        )
    )
    if cfg.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", verbose=1))
    return callbacks


def input_pipeline(
    data: Prepared, batch_size: int, seed: int, generative: bool
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Training batches reshuffled every epoch (seeded) and fixed validation batches.

    ``fit`` on NumPy arrays builds a new indexing pipeline every epoch, for the training and the
    validation data: about 0.1-0.2 s per epoch on 2 cores, more than the training steps of a
    small model. These datasets are built once; in-memory arrays stay in memory, memory-mapped
    ones (images stored as .npy) are streamed batch by batch from disk.
    """
    import numpy as np
    import tensorflow as tf

    def batches(split: tuple, shuffle: bool) -> tf.data.Dataset:
        x, y = split
        if isinstance(x, np.memmap):
            return streamed_batches(x, y, batch_size, seed, shuffle, generative)
        dataset = tf.data.Dataset.from_tensor_slices(x if generative else (x, y))
        if shuffle:
            dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        else:
            dataset = dataset.cache()
        return untuned(dataset.batch(batch_size).prefetch(2))

    return batches(data.train, shuffle=True), batches(data.val, shuffle=False)


def untuned(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.data's autotuner off, for batches sliced from arrays in memory.

    There is nothing to tune in them (no reading, no parallel map), and the autotuner's
    background work takes CPU time from the training steps: with it, two search workers on
    2 cores fitted each trial about 20 % slower, and a whole one-worker search took about 8 %
    longer (README, "Hyperparameter search"). Streamed batches (below) keep it: it sizes their
    parallel reads.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def streamed_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, shuffle: bool, generative: bool
) -> tf.data.Dataset:
    """Batches gathered from a memory-mapped ``x`` by index, never loading the whole array.

    Only the sample indices are shuffled (8 bytes each); each batch of indices is sorted, so
    rows are read from disk in order, and gathered in a ``tf.numpy_function``. The gather is
    declared stateless (its rows depend only on the indices): under op determinism, a stateful
    function in a map makes tf.data run the map serially and turn prefetching off, so reading
    would stop the training steps instead of overlapping them.
    """
    import numpy as np
    import tensorflow as tf

    def gather(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.sort(rows)
        return np.asarray(x[rows]), np.asarray(y[rows])

    def load(rows: tf.Tensor) -> Any:
        types = [tf.as_dtype(x.dtype), tf.as_dtype(y.dtype)]
        xb, yb = tf.numpy_function(gather, [rows], types, stateful=False)
        xb.set_shape((None, *x.shape[1:]))
        yb.set_shape((None, *y.shape[1:]))
        return xb if generative else (xb, yb)

    dataset = tf.data.Dataset.range(len(x))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def fixed_rows(split: tuple, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` rows of a split (all if it has fewer), drawn once with ``seed``, in order."""
    import numpy as np

    x, y = split
    n = min(size, len(x))
    pick = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return np.asarray(x[pick]), np.asarray(y[pick])


def eval_rows(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Fixed rows as batches for ``evaluate``, built once (no new input pipeline per epoch)."""
    import tensorflow as tf

    return untuned(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size))


def fit(
    model: keras.Model,
    data: Prepared,
    cfg: TrainConfig,
    callbacks: list[keras.callbacks.Callback],
    generative: bool,
    seed: int,
) -> dict[str, list[float]]:
    """Run ``model.fit`` with one progress line per epoch; return the per-epoch history.

    A supervised model is also scored after every epoch on ``train.eval_samples`` fixed training
    rows in inference mode (``train_eval_*`` in the history): the fit verdict's training curve.
    """
    from deepfit.train.callbacks import EpochProgress, TrainingEval

    train, val = input_pipeline(data, cfg.batch_size, seed, generative)
    if not generative and cfg.eval_samples:
        # First, so that every later callback (MLflow, backups, progress) sees its values.
        rows = eval_rows(*fixed_rows(data.train, cfg.eval_samples, seed), cfg.batch_size)
        callbacks = [TrainingEval(rows), *callbacks]
    history = model.fit(
        train,
        validation_data=val,
        epochs=cfg.epochs,
        shuffle=False,  # the training dataset reshuffles itself every epoch
        callbacks=[*callbacks, EpochProgress()],
        verbose=0,
    )
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def best_epoch(history: dict[str, list[float]], generative: bool) -> int:
    """1-based epoch whose weights are kept: lowest val_loss, or the last one for a GAN."""
    val = history.get("val_loss")
    if generative or not val:
        return len(next(iter(history.values()), []))
    return min(range(len(val)), key=val.__getitem__) + 1

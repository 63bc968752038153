"""Keras callbacks deepfit adds to the built-in ones: per-epoch MLflow metrics and progress
lines, per-layer gradient norms, GAN sample grids.

None of them has a per-batch hook: Keras then runs the training steps asynchronously, as it does
for a bare ``fit(verbose=0)``.

Imports Keras at module level: only training code imports this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import keras


class Throttle:
    """Runs a recurring chore only while it stays a small ``share`` of the wall time.

    ``due()`` is true once the time since the chore last ran is at least its last duration
    divided by ``share``: with ``share=0.01`` a chore that takes 20 ms runs at most every 2 s,
    one that takes 1 ms every 0.1 s. The first call is always due; ``share >= 1`` is always due.
    """

    def __init__(self, share: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.share = share
        self._clock = clock
        self._cost = 0.0
        self._since = clock()

    def due(self) -> bool:
        return self.share >= 1 or (self._clock() - self._since) * self.share >= self._cost

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Time one run of the chore."""
        started = self._clock()
        try:
            yield
        finally:
            self._since = self._clock()
            self._cost = self._since - started


class EpochMetricsLogger(keras.callbacks.Callback):
    """Every epoch's Keras logs (and values ``add``-ed by other callbacks, such as gradient
    norms) to the active MLflow run with ``step = epoch`` (1-based).

    Rows are sent in batches, at most about 1 % of the training time (``Throttle``), and always
    at the end of training; ``flush()`` sends what is pending (the training code calls it when
    ``fit`` fails, so the curve up to the failure is kept). The MLflow UI stays live: a
    sqlite write of ~10 ms goes out about once a second.

    ``mlflow.keras.MlflowCallback`` is not used: its ``on_test_end`` also logs the validation
    metrics a second time as ``validation_*`` without a step, which breaks per-epoch curves.
    """

    def __init__(
        self,
        log_rows: Callable[[list[tuple[int, dict[str, float]]]], None] | None = None,
        share: float = 0.01,
    ) -> None:
        super().__init__()
        if log_rows is None:
            from deepfit.tracking import log_epoch_rows

            log_rows = log_epoch_rows
        self._log_rows = log_rows
        self._throttle = Throttle(share)
        self._pending: list[tuple[int, dict[str, float]]] = []

    def add(self, values: dict[str, float], step: int) -> None:
        """Queue ``values`` for epoch ``step`` (1-based)."""
        if values:
            self._pending.append((step, values))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.add({k: float(v) for k, v in (logs or {}).items() if _is_number(v)}, epoch + 1)
        if self._throttle.due():
            self.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        with self._throttle.timed():
            self._log_rows(rows)


class EpochProgress(keras.callbacks.Callback):
    """One progress line per epoch: ``Epoch 3/30: 0.12 s - loss 0.2345 - val_loss 0.3456``.

    Replaces Keras' own ``verbose=2`` output, whose per-batch hook makes every training step wait
    for the previous one's results (no batch hooks: Keras dispatches steps asynchronously).
    """

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._write = write or (lambda line: print(line, flush=True))
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._started
        values = " - ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items() if _is_number(v))
        total = self.params.get("epochs", "?") if self.params else "?"
        self._write(f"Epoch {epoch + 1}/{total}: {seconds:.2f} s - {values}")


class FirstStep(keras.callbacks.Callback):
    """Wall-clock time (``time.time()``) at which the first training step had run: the start of
    the second compiled call, or the end of the first epoch if that comes first."""

    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.at is None and batch > 0:
            self.at = time.time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.at is None:
            self.at = time.time()


class GradientNorms(keras.callbacks.Callback):
    """At the end of every epoch, the gradient norm of each layer on one fixed training batch.

    The gradient is that of the data loss alone (weight penalties left out), with the model in
    inference mode: dropout draws no random numbers, so measuring never changes the training.
    ``records`` holds one ``{layer: norm}`` per epoch, layers in forward order; each epoch is
    also passed to ``on_record(norms, epoch)`` (the training code logs it to MLflow).
    """

    def __init__(
        self,
        probe: Callable[[], dict[str, float]],
        on_record: Callable[[dict[str, float], int], None] | None = None,
    ) -> None:
        super().__init__()
        self.probe = probe
        self.on_record = on_record
        self.records: list[dict[str, float]] = []
        self.layers: list[str] = list(getattr(probe, "layers", []))  # forward order

    def ordered_records(self) -> list[dict[str, float]]:
        """``records`` with every epoch's layers in forward order (a resume may reorder keys)."""
        if not self.layers:
            return list(self.records)
        return [{name: r[name] for name in self.layers} for r in self.records]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        norms = self.probe()
        self.records.append(norms)
        if self.on_record is not None:
            self.on_record(norms, epoch + 1)


def layer_weights(model: keras.Model, prefix: str = "") -> list[tuple[str, list]]:
    """``(layer name, trainable variables)`` in forward order; nested models as ``outer/inner``."""
    groups: list[tuple[str, list]] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            groups.extend(layer_weights(layer, f"{prefix}{layer.name}/"))
        elif layer.trainable_weights:
            groups.append((f"{prefix}{layer.name}", list(layer.trainable_weights)))
    return groups


def gradient_probe(model: keras.Model, x, y) -> Callable[[], dict[str, float]]:
    """Per-layer gradient norms of a compiled supervised model's loss on the batch ``(x, y)``."""
    import tensorflow as tf  # GradientTape: training runs on the TensorFlow backend

    loss_fn = keras.losses.get(model.loss)
    groups = layer_weights(model)

    @tf.function  # one graph: a few milliseconds per epoch instead of tens
    def squared_norms() -> list:
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(loss_fn(y, model(x, training=False)))
        return _squared_norms(groups, tape.gradient(loss, _flat(groups)))

    return _named_probe(groups, squared_norms)


def gan_gradient_probe(model: keras.Model, real, seed: int) -> Callable[[], dict[str, float]]:
    """Per-layer gradient norms of a GAN: discriminator loss for the discriminator's layers,
    generator loss for the generator's, on fixed real images and fixed noise."""
    import tensorflow as tf

    z = model.noise(len(real), seed=seed)
    groups = layer_weights(model.generator, "generator/")
    d_groups = layer_weights(model.discriminator, "discriminator/")

    @tf.function
    def squared_norms() -> list:
        with tf.GradientTape(persistent=True) as tape:
            d_loss, g_loss = model.losses(real, z, training=False)
        return _squared_norms(groups, tape.gradient(g_loss, _flat(groups))) + _squared_norms(
            d_groups, tape.gradient(d_loss, _flat(d_groups))
        )

    return _named_probe(groups + d_groups, squared_norms)


def _named_probe(groups: list[tuple[str, list]], squared_norms: Callable[[], list]):
    def probe() -> dict[str, float]:
        return _as_norms(groups, squared_norms())

    probe.layers = [name for name, _ in groups]  # type: ignore[attr-defined]
    return probe


def _flat(groups: list[tuple[str, list]]) -> list:
    return [v for _, variables in groups for v in variables]


def _squared_norms(groups: list[tuple[str, list]], grads: list) -> list:
    out, i = [], 0
    for _, variables in groups:
        parts = [
            keras.ops.sum(keras.ops.square(g))
            for g in grads[i : i + len(variables)]
            if g is not None
        ]  # None: the loss does not depend on the variable
        out.append(keras.ops.sum(keras.ops.stack(parts)) if parts else keras.ops.zeros(()))
        i += len(variables)
    return out


def _as_norms(groups: list[tuple[str, list]], squared: list) -> dict[str, float]:
    return {name: float(s) ** 0.5 for (name, _), s in zip(groups, squared, strict=True)}


class SampleGrid(keras.callbacks.Callback):
    """Every ``every`` epochs (and at the end) render samples from fixed noise to a PNG.

    ``render(model, epoch) -> Path`` draws and writes the grid; ``on_image`` receives each path
    (the training code logs it to MLflow).
    """

    def __init__(
        self,
        every: int,
        render: Callable[[keras.Model, int], Path],
        on_image: Callable[[Path], None] | None = None,
    ) -> None:
        super().__init__()
        self.every = every
        self.render = render
        self.on_image = on_image
        self.paths: list[Path] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.paths = []
        self._last = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every == 0:
            self._emit(epoch + 1)

    def on_train_end(self, logs: dict | None = None) -> None:
        # the last epoch index, not a count: a resumed fit starts after epoch 0
        done = self.model.history.epoch if self.model.history else []
        epochs_done = done[-1] + 1 if done else 0
        if epochs_done and epochs_done != self._last:
            self._emit(epochs_done)

    def _emit(self, epoch: int) -> None:
        path = self.render(self.model, epoch)
        self.paths.append(path)
        self._last = epoch
        if self.on_image is not None:
            self.on_image(path)


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False

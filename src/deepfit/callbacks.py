"""Keras callbacks deepfit adds to the built-in ones: per-epoch MLflow metrics, per-layer
gradient norms, GAN sample grids.

Imports Keras at module level: only training code imports this module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras


class EpochMetricsLogger(keras.callbacks.Callback):
    """Log every epoch's Keras logs to the active MLflow run with ``step = epoch`` (1-based).

    ``mlflow.keras.MlflowCallback`` is not used: its ``on_test_end`` also logs the validation
    metrics a second time as ``validation_*`` without a step, which breaks per-epoch curves.
    Logging is synchronous so the rows exist when ``fit`` returns, even if the process is killed.
    """

    def __init__(self, log_metrics: Callable[..., None] | None = None) -> None:
        super().__init__()
        if log_metrics is None:
            import mlflow

            log_metrics = mlflow.log_metrics
        self._log_metrics = log_metrics

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}
        if values:
            self._log_metrics(values, step=epoch + 1)


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

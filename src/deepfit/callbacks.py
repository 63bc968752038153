"""Keras callbacks deepfit adds to the built-in ones: per-epoch MLflow metrics, GAN sample grids.

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
        epochs_done = len(self.model.history.epoch) if self.model.history else 0
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

"""The Keras callback that feeds Optuna the validation curve and stops hopeless trials."""

from __future__ import annotations

import math
from typing import Any

import keras


class PruningCallback(keras.callbacks.Callback):
    """After every epoch, report ``monitor`` to the Optuna trial and raise ``TrialPruned``
    when its pruner says so. ``history`` keeps every epoch's logs up to and including the pruned
    one (Keras' own History is updated after the callbacks, so it misses that epoch)."""

    def __init__(self, trial: Any, monitor: str = "val_loss") -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.history: dict[str, list[float]] = {}

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.history = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import optuna

        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        value = float((logs or {}).get(self.monitor, math.nan))
        if not math.isfinite(value):
            return  # the divergence guard, earlier in the list, fails such a trial
        self.trial.report(value, epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}: {self.monitor} {value:.4g}")

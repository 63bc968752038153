"""Keras callbacks deepfit adds to the built-in ones: per-epoch MLflow metrics, progress lines,
the divergence guard, per-layer gradient norms and GAN sample grids.

None of them has a per-batch hook: Keras then runs the training steps asynchronously, as it does
for a bare ``fit(verbose=0)``. Imports Keras at module level: only training code imports it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from deepfit.outputs import TRAIN_EVAL

log = logging.getLogger(__name__)


class TrackingLost(RuntimeError):
    """The tracking store refused or stopped answering while training logged to it."""


class MlflowMetrics(keras.callbacks.Callback):
    """Every epoch's Keras logs to the active MLflow run, ``step = epoch`` (1-based), through
    MLflow's asynchronous logging: the call queues the values with the epoch's own timestamp
    and returns; MLflow batches the queue into ``log_batch`` requests in the background.
    ``seconds`` is the time training spent in these calls and the final flush.

    ``mlflow.keras.MlflowCallback`` does the same per epoch but also logs the validation metrics
    a second time as ``validation_*`` without a step (its ``on_test_end``), which breaks the
    per-epoch curves; this is its ``on_epoch_end`` alone, with 1-based steps.

    ``synchronous=True`` writes each epoch at once instead: for the short runs of a search, where
    draining MLflow's asynchronous queue at the end of each run costs about a second, more than
    the writes themselves.
    """

    def __init__(self, synchronous: bool = False) -> None:
        super().__init__()
        self.seconds = 0.0
        self._queued: list[Any] = []
        self.synchronous = synchronous

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.seconds = 0.0
        self._queued = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import mlflow

        started = time.perf_counter()
        self._raise_failed()
        values = {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}
        if values:
            if self.synchronous:
                mlflow.log_metrics(values, step=epoch + 1, synchronous=True)
            else:
                self._queued.append(mlflow.log_metrics(values, step=epoch + 1, synchronous=False))
        self.seconds += time.perf_counter() - started

    def _raise_failed(self) -> None:
        """Stop training once an earlier epoch's values failed to reach the store (after
        MLflow's bounded retries, DEEPFIT_TRACKING_TIMEOUT): without this, a dead tracking
        server would only show at the end of the fit. Never waits for a pending request."""
        pending = []
        for operations in self._queued:
            # MLflow's RunOperations has no public "done" check; its futures are plain
            # concurrent.futures.Future objects.
            futures = getattr(operations, "_operation_futures", None) or []
            if not all(f.done() for f in futures):
                pending.append(operations)
                continue
            failed = [f.exception() for f in futures if f.exception() is not None]
            if failed:
                raise TrackingLost(f"epoch metrics did not reach the MLflow store: {failed[0]}")
        self._queued = pending

    def on_train_end(self, logs: dict | None = None) -> None:
        import mlflow

        if self.synchronous:
            return
        started = time.perf_counter()
        mlflow.flush_async_logging()
        self.seconds += time.perf_counter() - started
        # The flush does not raise: values that never reached the store after MLflow's retries
        # show only in their futures. A fit whose curves are incomplete must not pass as done.
        for operations in self._queued:
            for future in getattr(operations, "_operation_futures", None) or []:
                if future.exception() is not None:
                    raise TrackingLost(
                        f"epoch metrics did not reach the MLflow store: {future.exception()}"
                    )
        self._queued = []


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


class TrainingEval(keras.callbacks.Callback):
    """At the end of every epoch, the model's loss and metrics on a fixed sample of training
    rows, measured as the validation split is (inference mode: dropout off, batch-norm moving
    statistics), added to the logs as ``train_eval_loss``, ``train_eval_accuracy``, ...

    Keras' own ``loss`` is a running mean over the epoch in training mode. Set beside
    ``val_loss``, that difference alone can look like a generalisation gap: early in training a
    batch-norm layer's moving statistics lag behind the batch statistics training uses, and
    dropout shifts the training loss. The fit verdict compares ``train_eval_loss`` with
    ``val_loss`` instead. Put it before the callbacks that log or keep the epoch's values.
    """

    def __init__(self, rows: Any) -> None:
        super().__init__()
        self.rows = rows  # a batched tf.data.Dataset of (x, y) training rows

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        scores = self.model.evaluate(self.rows, verbose=0, return_dict=True)
        logs.update({f"{TRAIN_EVAL}{name}": float(value) for name, value in scores.items()})


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


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite; the message says where and what to change."""


class DivergenceGuard(keras.callbacks.Callback):
    """Like ``TerminateOnNaN(raise_error=True)``, but over every loss in the logs (a GAN logs
    ``d_loss`` and ``g_loss``, not ``loss``), the validation losses too, and at the end of each
    epoch instead of after every batch (a per-batch hook would make every training step wait
    for the previous one). An epoch's mean loss is NaN or infinite when any of its batches was.

    It raises at once, so the diverged epoch is never logged, backed up or saved; put it first
    in the callback list. ``on_diverge`` runs just before (e.g. to drop a backup). With
    ``raise_error=False`` it stops training instead (a study keeps its diverged variants).
    """

    def __init__(
        self, on_diverge: Callable[[], None] | None = None, raise_error: bool = True
    ) -> None:
        super().__init__()
        self.on_diverge = on_diverge
        self.raise_error = raise_error

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        bad = {
            k: float(v) for k, v in (logs or {}).items() if k.endswith("loss") and not _finite(v)
        }
        if not bad:
            return
        if self.on_diverge is not None:
            self.on_diverge()
        values = ", ".join(f"{k} = {v}" for k, v in bad.items())
        message = f"training diverged at epoch {epoch + 1}: {values}"
        if not self.raise_error:
            log.warning("%s; training stopped", message)
            self.model.stop_training = True
            return
        raise TrainingDiverged(
            f"{message}; lower train.optimizer.learning_rate or set train.optimizer.clipnorm"
        )


class GradientNorms(keras.callbacks.Callback):
    """At the end of every epoch, the gradient norm of each layer on one fixed training batch.

    The gradient is that of the data loss alone (weight penalties left out), with the model in
    inference mode: dropout draws no random numbers, so measuring never changes the training.
    ``records`` holds one ``{layer: norm}`` per epoch, layers in forward order; each epoch is
    also passed to ``on_record(norms, epoch)`` (the training code logs it to MLflow).

    A probe with a ``warm_up()`` (deepfit's are ``tf.function``s) is built and run once in a
    thread while the first epoch trains, its result unused: building and optimising the graph
    takes 0.1 to 4 seconds, mostly Python, and the training steps release the interpreter while
    TensorFlow computes. The first epoch's end waits for the thread; the probe only reads the
    weights, and the norms are those of the same graph built in line.
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
        self._warming: threading.Thread | None = None
        self._warm_up_error: BaseException | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        warm_up = getattr(self.probe, "warm_up", None)
        if warm_up is None or self._warming is not None:
            return

        def build() -> None:
            try:
                warm_up()
            except BaseException as error:  # raised in the training thread at the epoch's end
                self._warm_up_error = error

        self._warming = threading.Thread(target=build, name="gradient-probe-warm-up", daemon=True)
        self._warming.start()

    def _warmed_up(self) -> None:
        if self._warming is not None:
            self._warming.join()
        if self._warm_up_error is not None:
            error, self._warm_up_error = self._warm_up_error, None
            raise error

    def on_train_end(self, logs: dict | None = None) -> None:
        self._warmed_up()

    def ordered_records(self) -> list[dict[str, float]]:
        """``records`` with every epoch's layers in forward order (a resume may reorder keys)."""
        if not self.layers:
            return list(self.records)
        return [{name: r[name] for name in self.layers} for r in self.records]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._warmed_up()
        norms = self.probe()
        self.records.append(norms)
        if self.on_record is not None:
            self.on_record(norms, epoch + 1)


class SampleGrid(keras.callbacks.Callback):
    """Every ``every`` epochs (and at the end, unless ``at_end`` is False) render samples from
    fixed noise to a PNG, or a language model's text.

    ``render(model, epoch) -> Path`` draws and writes the grid; ``on_image`` receives each path
    (the training code logs it to MLflow).
    """

    def __init__(
        self,
        every: int,
        render: Callable[[keras.Model, int], Path],
        on_image: Callable[[Path], None] | None = None,
        at_end: bool = True,
    ) -> None:
        super().__init__()
        self.every = every
        self.render = render
        self.on_image = on_image
        self.at_end = at_end
        self.paths: list[Path] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.paths = []
        self._last = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every == 0:
            self._emit(epoch + 1)

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.at_end:
            return
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


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True  # not a number: nothing to check


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False

"""Training that survives interruption.

``TrainingBackup`` keeps Keras' ``BackupAndRestore`` checkpoint, plus what it does not keep (the
history so far, early-stopping and plateau counters, gradient records, GAN sample grids), under
``.dvc/tmp/deepfit/backups/<run>-<key>/``: outside DVC's outputs, and keyed by a hash of the
run's resolved params, its data and deepfit's code, so a changed run never resumes from stale
state. A killed stage that runs again resumes after its last backed-up epoch; the folder is
deleted once the stage succeeds. Backups are throttled to about 2 % of the training time (every
epoch when epochs are slow, every few epochs when they take milliseconds), so a kill loses at
most a few seconds of training.

Imports Keras at module level: only training code imports this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from deepfit.outputs import write_text

if TYPE_CHECKING:
    from deepfit.config import Params, RunConfig

log = logging.getLogger(__name__)

BACKUP_ROOT = Path(".dvc") / "tmp" / "deepfit" / "backups"
STATE_FILE = "state.json"
BACKUP_SHARE = 0.02  # backups take at most about this share of the training time
KERAS_FILES = ("latest.weights.h5", "training_metadata.json")  # what BackupAndRestore writes
# What Keras' BackupAndRestore leaves out, per callback class: restored after a restart so
# early stopping counts patience and keeps the best weights across it.
STATEFUL = {
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "GradientNorms": ("records",),
}


def backup_key(run_flat: Mapping[str, Any], seeds: Mapping[str, int], manifest: Mapping) -> str:
    """Hash of what a backup is only valid for: resolved run params, seeds, data, code."""
    data = {s: info.get("sha256") for s, info in manifest.get("splits", {}).items()}
    payload = json.dumps(
        {"run": run_flat, "seeds": seeds, "data": data, "code": _code_digest()},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _code_digest() -> str:
    package = Path(__file__).resolve().parents[1]  # all of deepfit
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


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


class TrainingBackup:
    """The backup folder of one run: what an interrupted attempt left, and the callback that
    restores it and keeps it up to date."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.callback: BackupCallback | None = None

    @classmethod
    def for_run(
        cls, run: RunConfig, params: Params, manifest: Mapping, root: Path = BACKUP_ROOT
    ) -> TrainingBackup:
        """The folder ``root/<run>-<key>``. Folders of the same run under other keys (left by
        an attempt with other params, data or code) are deleted: they can never resume."""
        seeds = {"split": params.seeds.split, "train": params.seeds.train}
        folder = Path(root) / f"{run.name}-{backup_key(run.flat(), seeds, manifest)}"
        for other in Path(root).glob(f"{run.name}-*"):
            if other != folder and other.name.rsplit("-", 1)[0] == run.name:
                shutil.rmtree(other, ignore_errors=True)
        return cls(folder)

    def previous(self) -> dict[str, Any] | None:
        """State of an interrupted attempt with at least one completed epoch, or None."""
        try:
            state = json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and state.get("epochs") else None

    def tags(self) -> dict[str, str]:
        """MLflow tags linking a resumed run to the interrupted one."""
        state = self.previous()
        if state is None:
            return {}
        return {
            "deepfit.resumed_from": str(state.get("mlflow_run_id", "")),
            "deepfit.resumed_after_epoch": str(state["epochs"]),
        }

    def attach(
        self,
        run_id: str,
        callbacks: list[keras.callbacks.Callback],
        carry: Path | None = None,
        log_rows: Callable[[list[tuple[int, dict[str, float]]]], None] | None = None,
    ) -> BackupCallback:
        """The callback to append last to ``callbacks`` (it saves their state after theirs)."""
        self.callback = BackupCallback(self.folder, run_id, callbacks, carry, log_rows)
        return self.callback

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch logs of all attempts so far (what ``History`` would hold without a restart)."""
        return self.callback.history if self.callback else {}

    @property
    def seconds_before(self) -> float:
        """Training seconds spent by interrupted attempts."""
        return self.callback.seconds_before if self.callback else 0.0

    def clear(self) -> None:
        """Delete the folder: the stage succeeded, or its attempt is not worth resuming."""
        shutil.rmtree(self.folder, ignore_errors=True)


class BackupCallback(keras.callbacks.Callback):
    """Keras' ``BackupAndRestore`` plus deepfit's own state, saved together after an epoch when
    the ``Throttle`` allows (backups then cost at most ``share`` of the training time).

    Order on disk: deepfit's state for epoch k, then Keras' weights and epoch k. A kill between
    the two leaves Keras one backup behind; restoring uses the state snapshot of Keras' epoch
    (the last two are kept), so both always describe the same epoch.
    """

    def __init__(
        self,
        folder: Path,
        run_id: str,
        callbacks: list[keras.callbacks.Callback],
        carry: Path | None,
        log_rows: Callable[[list[tuple[int, dict[str, float]]]], None] | None,
        share: float = BACKUP_SHARE,
    ) -> None:
        super().__init__()
        self.folder = folder
        self.run_id = run_id
        self.stateful = [
            (c, STATEFUL[type(c).__name__]) for c in callbacks if type(c).__name__ in STATEFUL
        ]
        self.carry = carry
        self.log_rows = log_rows
        self.throttle = Throttle(share)
        self._backed_up = 0  # the last epoch backed up
        self.keras_backup = keras.callbacks.BackupAndRestore(
            str(folder / "keras"), double_checkpoint=True, delete_checkpoint=False
        )
        self.history: dict[str, list[float]] = {}
        self.seconds_before = 0.0
        self._snapshots: dict[str, Any] = {}
        self._started = 0.0

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self.keras_backup.set_model(model)

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.keras_backup.set_params(params)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._started = time.perf_counter()
        state = TrainingBackup(self.folder).previous()
        build_optimizers = getattr(self.model, "build_optimizers", None)  # a GAN's two
        if build_optimizers is not None and (self.folder / "keras").is_dir():
            build_optimizers()
        try:
            self.keras_backup.on_train_begin(logs)
        except (OSError, ValueError, KeyError) as exc:
            # Keras falls back to its previous checkpoint only when the weights file is broken;
            # a kill while it wrote the epoch file breaks that one instead.
            if not self._previous_checkpoint():
                self._give_up(exc)
            try:
                self.keras_backup.on_train_begin(logs)
            except (OSError, ValueError, KeyError) as again:
                self._give_up(again)
        done = int(getattr(self.model, "_initial_epoch", 0) or 0)
        if done == 0:
            self._save_state(0)
        elif state is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise RuntimeError(f"{self.folder}: training state missing; deleted, run again")
        else:
            self._restore(state, done)

    def _previous_checkpoint(self) -> bool:
        """Put Keras' previous checkpoint (``double_checkpoint``) in place of the latest."""
        keras_dir = self.folder / "keras"
        pairs = [(keras_dir / f"{name}.bkp", keras_dir / name) for name in KERAS_FILES]
        if not all(previous.is_file() for previous, _ in pairs):
            return False
        for previous, latest in pairs:
            shutil.copyfile(previous, latest)
        return True

    def _give_up(self, exc: BaseException) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        raise RuntimeError(
            f"{self.folder}: the training backup could not be restored ({exc}); it has been "
            "deleted, so running the stage again starts afresh"
        ) from exc

    def _restore(self, state: dict[str, Any], done: int) -> None:
        snapshot = state.get("snapshots", {}).get(str(done))
        if snapshot is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise RuntimeError(f"{self.folder}: no state for epoch {done}; deleted, run again")
        self.history = {k: list(v[:done]) for k, v in state.get("history", {}).items()}
        self._snapshots = {str(done): snapshot}
        for (callback, attrs), saved in zip(self.stateful, snapshot["callbacks"], strict=False):
            for attr in attrs:
                setattr(callback, attr, saved.get(attr, getattr(callback, attr)))
            if saved.get("best_weights"):
                with np.load(self.folder / saved["best_weights"], allow_pickle=False) as weights:
                    callback.best_weights = [weights[f"arr_{i}"] for i in range(len(weights.files))]
        self.seconds_before = float(state.get("seconds", 0.0))
        if snapshot.get("stopped"):  # early stopping had ended training: run no more epochs
            self.model._initial_epoch = self.params["epochs"]
        if self.carry is not None and (self.folder / "files").is_dir():
            shutil.copytree(self.folder / "files", self.carry, dirs_exist_ok=True)
        log.info(
            "resuming after epoch %d of %d from %s (interrupted MLflow run %s)",
            done,
            self.params["epochs"],
            self.folder,
            state.get("mlflow_run_id"),
        )
        if self.log_rows is not None:  # the new MLflow run gets the whole curve
            self.log_rows(
                [
                    (epoch + 1, {k: v[epoch] for k, v in self.history.items() if epoch < len(v)})
                    for epoch in range(done)
                ]
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            if _is_number(value):
                self.history.setdefault(key, []).append(float(value))
        if self.throttle.due():
            with self.throttle.timed():
                self._backup(epoch, logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        # Training is done: back up its last epoch too, so that a failure while the outputs
        # are saved (a full disk) loses no training, whatever the throttle skipped.
        done = len(next(iter(self.history.values()), []))
        if done and done != self._backed_up:
            self._backup(done - 1, logs)

    def _backup(self, epoch: int, logs: dict | None) -> None:
        self._backed_up = epoch + 1
        if self.carry is not None and self.carry.is_dir():
            shutil.copytree(self.carry, self.folder / "files", dirs_exist_ok=True)
        self._save_state(epoch + 1)
        self.keras_backup.on_epoch_end(epoch, logs)

    def _save_state(self, epochs: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if epochs:
            saved = [self._callback_state(c, attrs, epochs) for c, attrs in self.stateful]
            self._snapshots[str(epochs)] = {"callbacks": saved, "stopped": self.model.stop_training}
            self._snapshots = dict(list(self._snapshots.items())[-2:])
            self._drop_unused_weights()
        state = {
            "mlflow_run_id": self.run_id,
            "epochs": epochs,
            "history": self.history,
            "snapshots": self._snapshots,
            "seconds": self.seconds_before + time.perf_counter() - self._started,
        }
        write_text(self.folder / STATE_FILE, json.dumps(state, default=_plain))

    def _callback_state(self, callback: Any, attrs: tuple[str, ...], epochs: int) -> dict:
        saved = {attr: getattr(callback, attr, None) for attr in attrs}
        weights = getattr(callback, "best_weights", None)
        if weights is not None:
            name = f"best-{type(callback).__name__}-{getattr(callback, 'best_epoch', epochs)}.npz"
            if not (self.folder / name).exists():
                _save_arrays(self.folder / name, weights)
            saved["best_weights"] = name
        return saved

    def _drop_unused_weights(self) -> None:
        used = {
            saved.get("best_weights")
            for snapshot in self._snapshots.values()
            for saved in snapshot["callbacks"]
        }
        for path in self.folder.glob("best-*.npz"):
            if path.name not in used:
                path.unlink(missing_ok=True)


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, *arrays)
    tmp.replace(path)


def _is_number(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    # numpy scalars (Keras' `best`) as Python numbers; JSON's Infinity/NaN are fine in here
    return value.item() if hasattr(value, "item") else str(value)

"""deepfit.train.resume with real Keras fits: a restart resumes exactly where the backup stopped,
keeps early stopping's state, survives a half-written checkpoint, and never uses stale state."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from deepfit.train.callbacks import DivergenceGuard, TrainingDiverged
from deepfit.train.resume import BackupCallback, Throttle, TrainingBackup


class Interrupt(keras.callbacks.Callback):
    """Stops a fit at the start of epoch ``at`` (0-based), as a kill would."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32"))[:, None]


def _model() -> keras.Model:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    return model


def _fit(model, folder, epochs, extra=(), patience=3, first=(), share=1.0):
    """Fit with early stopping and a backup (after every epoch unless ``share`` < 1)."""
    stop = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
    callbacks = [*first, stop, *extra]
    backup = BackupCallback(folder, "run-id", callbacks, carry=None, log_rows=None, share=share)
    x, y = _data()
    model.fit(
        x,
        y,
        validation_data=(x[:16], y[:16]),
        epochs=epochs,
        batch_size=16,
        shuffle=False,  # so that a resumed fit can match an uninterrupted one bit for bit
        verbose=0,
        callbacks=[*callbacks, backup],
    )
    return backup, stop


def test_an_interrupted_fit_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path):
    whole, stop = _fit(_model(), tmp_path / "whole", epochs=8)
    reference = whole.model.get_weights()

    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), tmp_path / "cut", epochs=8, extra=[Interrupt(at=5)])
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["epochs"] == 5
    resumed, resumed_stop = _fit(_model(), tmp_path / "cut", epochs=8)

    # weights, optimizer state, history and early stopping's counters all carried over
    weights = resumed.model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(weights, reference, strict=True))
    assert resumed.history == whole.history
    assert (resumed_stop.best, resumed_stop.best_epoch) == (stop.best, stop.best_epoch)


def test_a_throttled_backup_resumes_from_its_last_backup_to_the_same_weights(tmp_path):
    whole, _ = _fit(_model(), tmp_path / "whole", epochs=8)
    with pytest.raises(KeyboardInterrupt):  # backs up after epoch 1 only: the chore is too slow
        _fit(_model(), tmp_path / "cut", epochs=8, extra=[Interrupt(at=5)], share=1e-9)
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["epochs"] == 1
    resumed, _ = _fit(_model(), tmp_path / "cut", epochs=8)
    weights = resumed.model.get_weights()
    assert all(
        np.array_equal(a, b) for a, b in zip(weights, whole.model.get_weights(), strict=True)
    )
    assert resumed.history == whole.history


def test_a_half_written_epoch_file_falls_back_to_the_previous_checkpoint(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), tmp_path, epochs=6, extra=[Interrupt(at=3)])
    (tmp_path / "keras" / "training_metadata.json").write_text('{"epo')  # killed mid-write
    resumed, _ = _fit(_model(), tmp_path, epochs=6)
    assert {len(v) for v in resumed.history.values()} == {6}


def test_a_run_early_stopping_had_ended_does_not_train_again(tmp_path):
    class Flat(keras.callbacks.Callback):  # validation loss never improves after epoch 1
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs["val_loss"] = 1.0 + epoch

    done, stop = _fit(_model(), tmp_path, epochs=20, first=[Flat()], patience=2)
    assert stop.stopped_epoch == 2 and len(done.history["loss"]) == 3
    # killed after training ended but before the outputs were saved: run the stage again
    again, _ = _fit(_model(), tmp_path, epochs=20, first=[Flat()], patience=2)
    assert len(again.history["loss"]) == 3


def test_divergence_guard_raises_at_the_first_nan_epoch_and_drops_the_backup(tmp_path):
    dropped = []
    guard = DivergenceGuard(on_diverge=lambda: dropped.append(True))
    guard.on_epoch_end(1, {"d_loss": 0.5, "g_loss": 1.0})
    assert dropped == []
    with pytest.raises(TrainingDiverged, match=r"at epoch 3: g_loss = nan"):
        guard.on_epoch_end(2, {"d_loss": 0.5, "g_loss": float("nan")})
    with pytest.raises(TrainingDiverged, match=r"at epoch 3: val_loss = inf"):
        guard.on_epoch_end(2, {"loss": 0.1, "val_loss": float("inf"), "accuracy": 0.5})
    assert dropped == [True, True]


def test_divergence_guard_can_stop_training_instead_of_failing():
    x, y = _data()
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(1e6), loss="mse")  # diverges at once
    guard = DivergenceGuard(raise_error=False)
    history = model.fit(x, y, epochs=50, batch_size=16, verbose=0, callbacks=[guard])
    losses = history.history["loss"]
    assert len(losses) < 50 and not np.isfinite(losses[-1])
    assert np.isfinite(losses[:-1]).all()


def test_backup_folder_is_keyed_by_params_and_data_and_stale_ones_go(tmp_path):
    from deepfit.config import parse_params
    from helpers import tiny_params

    raw = tiny_params()
    params = parse_params(raw)
    manifest = {"splits": {"train": {"sha256": "a"}}}
    first = TrainingBackup.for_run(params.run("tiny"), params, manifest, root=tmp_path)
    first.folder.mkdir()
    assert first.folder.name.startswith("tiny-")
    again = TrainingBackup.for_run(params.run("tiny"), params, manifest, root=tmp_path)
    assert again.folder == first.folder

    raw["runs"]["tiny"]["units"] = [16]
    changed = parse_params(raw)
    other = TrainingBackup.for_run(changed.run("tiny"), changed, manifest, root=tmp_path)
    assert other.folder != first.folder and not first.folder.exists()  # stale state deleted
    new_data = {"splits": {"train": {"sha256": "b"}}}
    moved = TrainingBackup.for_run(changed.run("tiny"), changed, new_data, root=tmp_path)
    assert moved.folder != other.folder


def test_throttle_keeps_a_chore_below_its_share_of_the_time():
    now = [0.0]
    throttle = Throttle(0.1, clock=lambda: now[0])
    assert throttle.due()  # the first run is always due
    with throttle.timed():
        now[0] += 0.5  # the chore takes 0.5 s: next due 5 s after it ended
    now[0] += 4.9
    assert not throttle.due()
    now[0] += 0.1
    assert throttle.due()

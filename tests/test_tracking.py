"""MLflow tracking: store location (also in DVC experiment copies), run status, epoch logging."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepfit import tracking
from deepfit.config import load_params
from helpers import ROOT


def test_repo_root_escapes_dvc_experiment_copies(tmp_path):
    (tmp_path / ".dvc").mkdir()
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpab12cd" / "src"
    copy.mkdir(parents=True)
    assert tracking.repo_root(copy) == tmp_path
    assert tracking.repo_root(tmp_path / ".dvc" / "tmp" / "exps") == tmp_path


def test_tracking_uri_is_absolute_sqlite_at_root_unless_overridden(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(tmp_path / "sub") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5005")
    assert tracking.tracking_uri(tmp_path) == "http://127.0.0.1:5005"


def test_run_name_and_tags_carry_the_dvc_experiment(monkeypatch):
    run = load_params(ROOT / "params.yaml").run("cnn")
    monkeypatch.setenv("DVC_EXP_NAME", "lucid-moth")
    tags = tracking.run_tags(run)
    assert tags["dvc_exp_name"] == "lucid-moth"
    assert tags["deepfit.run"] == "cnn" and tags["deepfit.model"] == "cnn"
    assert tags["version.keras"].startswith("3.")
    assert tracking.mlflow_run_name("cnn") == "cnn@lucid-moth"
    monkeypatch.delenv("DVC_EXP_NAME")
    assert tracking.mlflow_run_name("cnn") == "cnn"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking.tracking_uri(tmp_path))


def test_failing_block_ends_run_failed_with_reason(store):
    run = load_params(ROOT / "params.yaml").run("fnn")
    with (
        pytest.raises(FloatingPointError),
        tracking.start_run(run, "deepfit-test", {"a": 1, "units": [2, 3]}) as active,
    ):
        run_id = active.info.run_id
        raise FloatingPointError("training diverged")
    stored = store.get_run(run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["deepfit.error"] == "FloatingPointError: training diverged"
    assert stored.data.params == {"a": "1", "units": "2,3"}
    experiment = store.get_experiment(stored.info.experiment_id)
    assert experiment.artifact_location == (Path.cwd() / "mlartifacts").as_uri()


def test_resume_logs_into_the_same_run(store):
    run = load_params(ROOT / "params.yaml").run("fnn")
    with tracking.start_run(run, "deepfit-test", {}) as active:
        run_id = active.info.run_id
    with tracking.resume_run(run_id, "deepfit-test"):
        import mlflow

        mlflow.log_metric("test.accuracy", 0.5)
    stored = store.get_run(run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.metrics["test.accuracy"] == 0.5


def _tiny_fit(callbacks, epochs: int) -> None:
    """A real Keras fit of a small dense model on random data, with validation."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(
        x, y, validation_split=0.25, batch_size=32, epochs=epochs, verbose=0, callbacks=callbacks
    )


def test_mlflow_metrics_logs_every_epoch_with_its_step_and_own_timestamp(store):
    import keras

    from deepfit.train.callbacks import MlflowMetrics

    class Note(keras.callbacks.Callback):  # a non-numeric log value is skipped, not an error
        def on_epoch_end(self, epoch, logs=None):
            logs["note"] = "text"

    epochs = 6
    run = load_params(ROOT / "params.yaml").run("fnn")
    with tracking.start_run(run, "deepfit-test", {}) as active:
        _tiny_fit([Note(), MlflowMetrics()], epochs)
        run_id = active.info.run_id
    stored = store.get_run(run_id)
    assert set(stored.data.metrics) == {"loss", "val_loss", "accuracy", "val_accuracy"}
    for key in stored.data.metrics:
        history = store.get_metric_history(run_id, key)
        assert [m.step for m in history] == list(range(1, epochs + 1)), key
        stamps = [m.timestamp for m in history]
        assert len(set(stamps)) == epochs, (key, stamps)  # no two epochs share a timestamp
        assert stamps == sorted(stamps), key
    losses = [m.value for m in store.get_metric_history(run_id, "loss")]
    assert all(isinstance(v, float) and v > 0 for v in losses)


def test_a_failing_fit_keeps_its_curve_up_to_the_failure(store):
    import keras

    from deepfit.train.callbacks import MlflowMetrics

    class Fail(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("disk full")

    run = load_params(ROOT / "params.yaml").run("fnn")
    with (
        pytest.raises(RuntimeError, match="disk full"),
        tracking.start_run(run, "deepfit-test", {}) as active,
    ):
        run_id = active.info.run_id
        _tiny_fit([MlflowMetrics(), Fail()], epochs=10)
    stored = store.get_run(run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["deepfit.error"] == "RuntimeError: disk full"
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        history = store.get_metric_history(run_id, key)
        assert [m.step for m in history] == [1, 2, 3], key  # the failing epoch's own values too
        assert len({m.timestamp for m in history}) == 3, key


def test_resuming_a_run_missing_from_the_store_says_how_to_recover(store):
    with (
        pytest.raises(tracking.TrackingError, match=r"retrain with `dvc repro -f train@cnn`"),
        tracking.resume_run("0" * 32, "deepfit-test", "cnn"),
    ):
        pass

"""MLflow tracking: store location (also in DVC experiment copies), run status, epoch logging."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepfit import tracking
from deepfit.config import load_params

ROOT = Path(__file__).resolve().parents[1]


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


def test_epoch_logger_uses_one_based_epoch_steps_and_sends_pending_rows_at_the_end():
    from deepfit.callbacks import EpochMetricsLogger

    sent = []
    logger = EpochMetricsLogger(sent.append, share=1.0)  # send after every epoch
    logger.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.75})
    logger.add({"grad_norm.dense": 0.25}, 1)
    logger.on_epoch_end(1, {"loss": float("nan"), "note": "text"})
    logger.on_epoch_end(2, None)
    logger.on_train_end()
    assert sent == [
        [(1, {"loss": 0.5, "val_loss": 0.75})],
        [(1, {"grad_norm.dense": 0.25}), (2, {"loss": pytest.approx(float("nan"), nan_ok=True)})],
    ]


def test_epoch_logger_batches_rows_while_sending_is_slow():
    from deepfit.callbacks import EpochMetricsLogger

    sent = []
    logger = EpochMetricsLogger(sent.append, share=1e-9)  # the first send "costs" the rest
    for epoch in range(5):
        logger.on_epoch_end(epoch, {"loss": float(epoch)})
    assert [[step for step, _ in batch] for batch in sent] == [[1]]
    logger.flush()
    assert [[step for step, _ in batch] for batch in sent] == [[1], [2, 3, 4, 5]]


def test_throttle_keeps_a_chore_below_its_share_of_the_time():
    from deepfit.callbacks import Throttle

    now = [0.0]
    throttle = Throttle(0.1, clock=lambda: now[0])
    assert throttle.due()  # the first run is always due
    with throttle.timed():
        now[0] += 0.5  # the chore takes 0.5 s: next due 5 s after it ended
    now[0] += 4.9
    assert not throttle.due()
    now[0] += 0.1
    assert throttle.due()


def test_resuming_a_run_missing_from_the_store_says_how_to_recover(store):
    with (
        pytest.raises(tracking.TrackingError, match=r"retrain with `dvc repro -f train@cnn`"),
        tracking.resume_run("0" * 32, "deepfit-test", "cnn"),
    ):
        pass

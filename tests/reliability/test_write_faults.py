"""Write errors (disk full) while saving outputs: no partial file at an output path, the previous
output whole, nothing lost; leftovers of killed writers are swept."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepfit import outputs
from deepfit.stages._cli import stage
from helpers import TINY_RUN, mlflow_client, tiny_params


def _disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def test_disk_full_in_a_staged_folder_keeps_the_previous_output(tmp_path):
    target = tmp_path / "models" / "run"
    with outputs.atomic_dir(target) as staging:
        (staging / "model.keras").write_text("old model")
    with pytest.raises(OSError, match="No space left"), outputs.atomic_dir(target) as staging:
        (staging / "model.keras").write_text("half a new mo")
        raise _disk_full()
    assert [p.name for p in target.iterdir()] == ["model.keras"]
    assert (target / "model.keras").read_text() == "old model"
    assert not _leftovers(tmp_path)


def test_disk_full_in_a_new_output_leaves_no_folder_at_all(tmp_path):
    with pytest.raises(OSError), outputs.atomic_dir(tmp_path / "reports" / "plots" / "run") as d:
        (d / "loss.csv").write_text("epoch,train")
        raise _disk_full()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even the parent folders


def test_disk_full_while_writing_a_file_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics" / "run.json"
    outputs.write_json(path, {"test": {"accuracy": 0.5}})

    class FullDisk(io.StringIO):
        def write(self, text: str) -> int:
            super().write(text[: len(text) // 2])
            raise _disk_full()

    real_fdopen = os.fdopen

    def fdopen(fd: int, *args: object, **kwargs: object) -> io.StringIO:
        real_fdopen(fd).close()
        return FullDisk()

    monkeypatch.setattr(outputs.os, "fdopen", fdopen)
    with pytest.raises(OSError, match="No space left"):
        outputs.write_json(path, {"test": {"accuracy": 0.9}})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"test": {"accuracy": 0.5}}
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]


def test_non_finite_numbers_never_reach_an_output(tmp_path):
    with pytest.raises(outputs.NonFiniteError, match=r"run.json: .* at test.loss \(nan\)"):
        outputs.write_json(tmp_path / "run.json", {"test": {"loss": float("nan")}})
    assert not list(tmp_path.iterdir())


def test_a_disk_full_stage_exits_1_in_one_line(capsys):
    with pytest.raises(SystemExit) as stopped, stage("train@run"):
        raise OSError(errno.ENOSPC, "No space left on device", "models/.run.tmp-1-ab/model.keras")
    assert stopped.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "deepfit train@run: error: [Errno 28] No space left on device: "
        "'models/.run.tmp-1-ab/model.keras'"
    ]


def test_leftovers_of_dead_writers_are_swept_and_a_stepped_aside_output_comes_back(tmp_path):
    code = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    dead = dead.strip()
    folder = tmp_path / "models"
    (folder / f".run.tmp-{dead}-aa").mkdir(parents=True)  # a staging folder of a killed stage
    (folder / f".run.old-{dead}-bb").mkdir()  # killed between the two renames of a swap
    (folder / f".run.old-{dead}-bb" / "model.keras").write_text("the last good model")
    (folder / f".run.tmp-{os.getpid()}-cc").mkdir()  # a live writer's: not touched
    (folder / f".other.tmp-{dead}-dd").mkdir()  # another output's: swept when it is written
    outputs.sweep_leftovers(folder / "run")
    assert (folder / "run" / "model.keras").read_text() == "the last good model"
    assert sorted(p.name for p in folder.iterdir()) == [
        f".other.tmp-{dead}-dd",
        f".run.tmp-{os.getpid()}-cc",
        "run",
    ]


@pytest.mark.slow
def test_disk_full_while_saving_the_model_loses_no_training(ready_workdir, monkeypatch):
    """The real train_run: model.save fails half-way; outputs stay absent, the MLflow run says
    FAILED, and the next attempt (disk freed) resumes from the backup without training again."""
    import keras

    from deepfit.config import parse_params
    from deepfit.data import load_prepared
    from deepfit.train.run import TrainOutputs, train_run

    monkeypatch.chdir(ready_workdir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    params = parse_params(tiny_params({"tiny": dict(TINY_RUN)}))
    run = params.run("tiny")
    data = load_prepared(Path("data/prepared/digits"))
    out = TrainOutputs.for_run("tiny")

    real_save = keras.Model.save

    def save_half(model: keras.Model, path: str, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise _disk_full()

    monkeypatch.setattr(keras.Model, "save", save_half)
    with pytest.raises(OSError, match="No space left"):
        train_run(run, params, data, out)
    assert not Path("models").exists() and not Path("reports").exists()
    assert not _leftovers(ready_workdir)
    client = mlflow_client(ready_workdir)
    (failed,) = client.search_runs([client.get_experiment_by_name("deepfit").experiment_id])
    assert failed.info.status == "FAILED"
    assert failed.data.tags["deepfit.error"].startswith("OSError: [Errno 28] No space left")
    assert list(Path(".dvc/tmp/deepfit/backups").glob("tiny-*/state.json"))  # training kept

    monkeypatch.setattr(keras.Model, "save", real_save)
    summary = train_run(run, params, data, out)
    assert summary["epochs"] == params.train.epochs
    assert keras.saving.load_model(Path("models/tiny/model.keras")).name == "fnn"
    history = json.loads(Path("models/tiny/history.json").read_text())
    assert {len(v) for v in history.values()} == {params.train.epochs}
    resumed = client.get_run(summary["mlflow_run_id"])
    assert resumed.data.tags["deepfit.resumed_from"] == failed.info.run_id
    assert resumed.data.tags["deepfit.resumed_after_epoch"] == str(params.train.epochs)

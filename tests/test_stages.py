"""Stage CLIs on bad input: one line naming the key or file, exit status 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import ROOT, run_stage


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"]["mine"] = {
        "source": "csv",
        "path": "mine.csv",
        "target": "label",
        "task": "classification",
        "val_fraction": 0.2,
        "test_fraction": 0.2,
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "data" / "raw").mkdir(parents=True)
    return tmp_path


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_missing_user_file_names_it_and_writes_nothing(workdir):
    before = files_under(workdir)
    done = run_stage(workdir, "prepare", "--dataset", "mine")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepfit prepare@mine: error: ")
    assert "mine.csv" in lines[0]
    assert files_under(workdir) == before


def test_mistyped_key_stops_the_stage_before_any_work(workdir):
    text = (workdir / "params.yaml").read_text().replace("epochs: 30", "epochs: ten", 1)
    (workdir / "params.yaml").write_text(text)
    done = run_stage(workdir, "prepare", "--dataset", "digits")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "deepfit prepare@digits: error: params.yaml: train.epochs: "
        "Input should be a valid integer (got 'ten')"
    ]
    assert not (workdir / "data" / "prepared").exists()


def test_corrupted_prepared_data_is_refused_by_training(workdir):
    assert run_stage(workdir, "prepare", "--dataset", "digits").returncode == 0
    train_file = workdir / "data" / "prepared" / "digits" / "train.npz"
    data = bytearray(train_file.read_bytes())
    data[-100] ^= 0xFF
    train_file.write_bytes(data)
    done = run_stage(workdir, "train", "--run", "fnn")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.npz" in lines[0] and "sha256" in lines[0]
    assert not (workdir / "models").exists()
    assert not (workdir / "mlflow.db").exists()  # refused before any tracking

"""Bad input: one line naming the key or file, exit status 2, nothing written.

Every case runs a real stage on a folder holding only what the case needs: as a process for a
few, as the stage's ``main`` in-process for most (same code, exit status included, much
quicker). "Nothing written" is checked on every path under the folder (sizes and times), so no
output, temporary or MLflow store appears. The DVC side (dvc.lock unchanged) is checked in
test_pipeline_faults.py.
"""

from __future__ import annotations

import copy
import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from deepfit.config import load_params
from deepfit.stages import prepare, train
from helpers import TINY_RUN, error_line, run_stage, snapshot, tiny_params, write_params


@pytest.fixture
def stage_main(monkeypatch, capsys):
    """Run a stage's ``main`` in-process in a folder: (exit status, stderr lines)."""
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def run(module, cwd: Path, *argv: str) -> tuple[int, list[str]]:
        monkeypatch.chdir(cwd)
        with pytest.raises(SystemExit) as stopped:
            module.main(list(argv))
        return stopped.value.code, capsys.readouterr().err.splitlines()

    return run


def _set(path: str, value: object) -> Callable[[dict], None]:
    def change(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return change


# (case, change to the tiny params, expected text of the error line after "params.yaml: ")
PARAMS_CASES = [
    ("unknown top-level key", _set("trian", {}), "trian: unknown key; allowed keys: seeds, "),
    (
        "mistyped nested key",
        _set("train.optimizer.lr", 0.1),
        "train.optimizer.lr: unknown key; allowed keys: name, learning_rate,",
    ),
    (
        "unknown model",
        _set("runs.tiny.model", "transformer"),
        "runs.tiny.model: unknown model 'transformer'; valid: cnn, fnn, gan, lstm, rnn",
    ),
    (
        "dataset not declared",
        _set("runs.tiny.dataset", "mnist"),
        "runs.tiny.dataset: 'mnist' is not declared under datasets; declared: digits,",
    ),
    (
        "unknown activation",
        _set("runs.tiny.activation", "tanhh"),
        "runs.tiny.activation: Input should be 'relu', 'sigmoid', 'tanh',",
    ),
    (
        "unknown optimizer",
        _set("train.optimizer.name", "adamm"),
        "train.optimizer.name: Input should be 'sgd', 'adam', 'adamw',",
    ),
    (
        "loss is not a key (it follows the task)",
        _set("train.loss", "hinge"),
        "train.loss: unknown key; allowed keys: epochs, batch_size, steps_per_execution,",
    ),
    ("epochs: ten", _set("train.epochs", "ten"), "train.epochs: Input should be a valid integer"),
    (
        "list where a number goes",
        _set("train.batch_size", [64]),
        "train.batch_size: Input should be a valid integer (got [64])",
    ),
    ("-S train=5", _set("train", 5), "train: expected a mapping of keys, got int 5"),
    ("-S seeds=1", _set("seeds", 1), "seeds: expected a mapping of keys, got int 1"),
    ("-S runs=x", _set("runs", "x"), "runs: expected a mapping of keys, got str 'x'"),
    (
        "-S runs.tiny.train.optimizer=adam",
        _set("runs.tiny.train.optimizer", "adam"),
        "runs.tiny.train.optimizer: expected a mapping of keys, got str 'adam'",
    ),
    (
        "epochs 0",
        _set("train.epochs", 0),
        "train.epochs: Input should be greater than or equal to 1",
    ),
    (
        "absurd epochs",
        _set("train.epochs", 10**9),
        "train.epochs: Input should be less than or equal to 10000",
    ),
    ("batch size 0", _set("train.batch_size", 0), "train.batch_size: Input should be greater"),
    ("dropout 1", _set("runs.tiny.dropout", 1.0), "runs.tiny.dropout: Input should be less than 1"),
    (
        "learning rate 0",
        _set("train.optimizer.learning_rate", 0.0),
        "train.optimizer.learning_rate: Input should be greater than 0",
    ),
    (
        "negative learning rate",
        _set("train.optimizer.learning_rate", -1e-3),
        "train.optimizer.learning_rate: Input should be greater than 0",
    ),
    (
        "sequence length 0",
        _set("datasets.adding.length", 0),
        "datasets.adding.length: Input should be greater than or equal to 2",
    ),
    (
        "forecast window 0",
        _set("datasets.sunspots.window", 0),
        "datasets.sunspots.window: Input should be greater than or equal to 1",
    ),
    (
        "CNN on a 1-D series",
        _set("runs.tiny", {**TINY_RUN, "model": "cnn", "dataset": "sunspots"}),
        "runs.tiny: model 'cnn' needs image data, but dataset 'sunspots' is sequence data",
    ),
    (
        "path outside the repository",
        _set(
            "datasets.mine",
            {"source": "csv", "path": "../../etc/passwd", "target": "y", "task": "regression"},
        ),
        "datasets.mine.path: must stay inside data/raw/ ('..' is not allowed)",
    ),
    (
        "absolute path",
        _set(
            "datasets.mine",
            {"source": "npz", "path": "/etc/passwd", "kind": "vector", "task": "regression"},
        ),
        "datasets.mine.path: must be relative to data/raw/, got absolute path '/etc/passwd'",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), [c[1:] for c in PARAMS_CASES], ids=[c[0] for c in PARAMS_CASES]
)
def test_bad_params_stop_the_train_stage_in_one_line(workdir, stage_main, change, expected):
    raw = tiny_params()
    change(raw)
    write_params(workdir, raw)
    before = snapshot(workdir)
    status, lines = stage_main(train, workdir, "--run", "tiny")
    assert status == 2 and len(lines) == 1
    assert lines[0].startswith(f"deepfit train@tiny: error: params.yaml: {expected}"), lines
    assert snapshot(workdir) == before


def test_malformed_yaml_names_file_and_line(workdir):
    (workdir / "params.yaml").write_text("seeds:\n  split: [1, 2\ntrain: {}\n")
    before = snapshot(workdir)
    done = run_stage(workdir, "train", "--run", "tiny")
    assert done.returncode == 2
    line = error_line(done, "train@tiny")
    assert line.startswith("deepfit train@tiny: error: params.yaml: malformed YAML (line ")
    assert snapshot(workdir) == before


def test_unknown_run_lists_the_declared_ones(workdir):
    before = snapshot(workdir)
    done = run_stage(workdir, "train", "--run", "nope")
    assert done.returncode == 2
    assert error_line(done, "train@nope") == (
        "deepfit train@nope: error: runs.nope: no such run; declared runs: tiny"
    )
    assert snapshot(workdir) == before


@pytest.mark.parametrize("written", ["1e-3", "1.0e-3", "1E-3", "0.001"])
def test_scientific_notation_reads_as_a_float(workdir, written):
    text = (workdir / "params.yaml").read_text()
    assert "learning_rate: 0.001" in text
    (workdir / "params.yaml").write_text(
        text.replace("learning_rate: 0.001", f"learning_rate: {written}")
    )
    rate = load_params(workdir / "params.yaml").train.optimizer.learning_rate
    assert isinstance(rate, float) and rate == 0.001


def test_batch_larger_than_the_data(ready_workdir):
    raw = tiny_params()
    raw["train"]["batch_size"] = 5000
    write_params(ready_workdir, raw)
    before = snapshot(ready_workdir)
    done = run_stage(ready_workdir, "train", "--run", "tiny")
    assert done.returncode == 2
    assert error_line(done, "train@tiny") == (
        "deepfit train@tiny: error: train.batch_size: 5000 is larger than the 1167 training "
        "samples of digits; use at most 1167"
    )
    assert snapshot(ready_workdir) == before
    assert "tensorflow" not in done.stderr.lower()  # refused before TensorFlow was imported


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(data)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _tamper_manifest_hash(directory: Path) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["splits"]["val"]["sha256"] = "0" * 64
    (directory / "manifest.json").write_text(json.dumps(manifest))


PREPARED_CASES = [
    ("missing", lambda d: [p.unlink() for p in d.iterdir()], "manifest.json: not found"),
    ("truncated", lambda d: _truncate(d / "train.npz"), "train.npz: sha256 does not match"),
    ("corrupted", lambda d: _flip_byte(d / "test.npz"), "test.npz: sha256 does not match"),
    ("manifest hash", _tamper_manifest_hash, "val.npz: sha256 does not match manifest.json"),
    ("split file gone", lambda d: (d / "val.npz").unlink(), "val.npz: missing"),
    (
        "manifest not JSON",
        lambda d: (d / "manifest.json").write_text("{"),
        "manifest.json: not valid JSON",
    ),
]


@pytest.mark.parametrize(
    ("damage", "expected"), [c[1:] for c in PREPARED_CASES], ids=[c[0] for c in PREPARED_CASES]
)
def test_damaged_prepared_data_is_refused(ready_workdir, stage_main, damage, expected):
    damage(ready_workdir / "data" / "prepared" / "digits")
    before = snapshot(ready_workdir)
    status, lines = stage_main(train, ready_workdir, "--run", "tiny")
    assert status == 2 and len(lines) == 1
    assert expected in lines[0] and "the prepare stage" in lines[0]
    assert snapshot(ready_workdir) == before


def _csv(path: Path, rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _rows(n: int, bad: object = None) -> list[list[object]]:
    rows: list[list[object]] = [["a", "b", "y"]]
    rows += [[i * 0.5, i % 3, i % 2] for i in range(n)]
    if bad is not None:
        rows[3][1] = bad
    return rows


USER_DATA_CASES = [
    (
        "NaN in a CSV",
        "csv",
        _rows(40, "nan"),
        "column 'b' mixes numbers and text: line 4 (data row 3) holds 'nan'",
    ),
    (
        "Inf in a CSV",
        "csv",
        _rows(40, "inf"),
        "mine.csv: line 4 (data row 3), column 'b': inf is not a finite number",
    ),
    ("empty CSV", "csv", _rows(0), "mine.csv: no data rows"),
    (
        "one-sample CSV",
        "csv",
        _rows(1),
        "column 'y' of data/raw/mine.csv has one value (0) on every row",
    ),
    ("Inf in an NPZ", "npz", None, "mine.npz (target): contains 1 NaN or infinite value(s)"),
]


@pytest.mark.parametrize(
    ("kind", "rows", "expected"),
    [c[1:] for c in USER_DATA_CASES],
    ids=[c[0] for c in USER_DATA_CASES],
)
def test_bad_user_data_is_refused_by_prepare(workdir, stage_main, kind, rows, expected):
    raw = tiny_params()
    declared = {"source": kind, "path": f"mine.{kind}", "task": "regression"}
    declared.update({"target": "y"} if kind == "csv" else {"kind": "vector"})
    raw["datasets"]["mine"] = declared
    write_params(workdir, raw)
    if kind == "csv":
        _csv(workdir / "data" / "raw" / "mine.csv", rows)
    else:
        y = np.arange(40, dtype=float)
        y[5] = np.inf
        np.savez(workdir / "data" / "raw" / "mine.npz", x=np.ones((40, 3)), y=y)
    before = snapshot(workdir)
    status, lines = stage_main(prepare, workdir, "--dataset", "mine")
    assert status == 2 and len(lines) == 1
    assert lines[0].startswith("deepfit prepare@mine: error: ") and expected in lines[0]
    assert snapshot(workdir) == before


def test_failed_prepare_keeps_the_previous_output_whole(ready_workdir):
    """A bad change to a dataset leaves data/prepared/<dataset>/ exactly as the last good run."""
    raw = copy.deepcopy(tiny_params())
    raw["datasets"]["digits"]["test_fraction"] = 0.6  # val + test must stay below 0.8
    write_params(ready_workdir, raw)
    before = snapshot(ready_workdir)
    done = run_stage(ready_workdir, "prepare", "--dataset", "digits")
    assert done.returncode == 2
    assert "datasets.digits.test_fraction: Input should be less than 0.5" in error_line(
        done, "prepare@digits"
    )
    assert snapshot(ready_workdir) == before

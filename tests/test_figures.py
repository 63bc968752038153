"""Every figure function writes one valid, small PNG atomically and returns its path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deepfit import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path, returned: Path) -> None:
    assert returned == path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) < 300_000
    # Only the figure itself: no temp file left beside it.
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    # Readable like any other output (honours the umask), not owner-only like a mkstemp file.
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_confusion_matrix_png(tmp_path):
    cm = np.diag([30, 28, 35]) + 1
    path = tmp_path / "confusion.png"
    _assert_png(path, figures.confusion_matrix_png(cm, ["a", "b", "c"], path, "cnn"))


def test_confusion_matrix_png_rejects_wrong_names(tmp_path):
    with pytest.raises(ValueError):
        figures.confusion_matrix_png([[1, 0], [0, 1]], ["a"], tmp_path / "c.png", "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("with_baseline", [True, False])
def test_forecast_png(tmp_path, with_baseline):
    years = list(range(1969, 2009))
    actual = 80 + 60 * np.sin(np.arange(40) / 1.8)
    baseline = actual + 5 if with_baseline else None
    path = tmp_path / "nested" / "forecast.png"
    _assert_png(path, figures.forecast_png(years, actual, actual + 3, baseline, path, "lstm"))


def test_scatter_true_pred_png(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 2, size=2000)
    path = tmp_path / "predictions.png"
    _assert_png(path, figures.scatter_true_pred_png(y, y + rng.normal(0, 0.1, 2000), path, "rnn"))


@pytest.mark.parametrize("shape", [(100, 8, 8), (64, 8, 8, 1), (7, 6, 6, 3)])
def test_image_grid_png(tmp_path, shape):
    images = np.random.default_rng(0).uniform(size=shape)
    path = tmp_path / "samples.png"
    _assert_png(path, figures.image_grid_png(images, path, title="gan: epoch 3", ncols=8))


def test_image_grid_rejects_bad_shape(tmp_path):
    with pytest.raises(ValueError):
        figures.image_grid_png(np.zeros((4, 8)), tmp_path / "s.png", "x")


def test_run_curves_png(tmp_path):
    history = {
        "loss": [1.0, 0.6, 0.4],
        "accuracy": [0.5, 0.7, 0.8],
        "val_loss": [1.1, 0.7, 0.6],
        "val_accuracy": [0.45, 0.65, 0.7],
        "learning_rate": [1e-3] * 3,
    }
    path = tmp_path / "curves.png"
    _assert_png(path, figures.run_curves_png(history, path, title="fnn"))


def test_training_rows_scored_as_validation_share_their_metrics_panel():
    history = {
        "loss": [1.0, 0.6],
        "val_loss": [1.1, 0.7],
        "train_eval_loss": [1.05, 0.65],
        "accuracy": [0.5, 0.7],
        "val_accuracy": [0.45, 0.65],
        "train_eval_accuracy": [0.5, 0.66],
        "train_eval_only": [1.0, 2.0],  # no training metric of that name: its own panel
    }
    assert figures._metric_names(history) == ["loss", "accuracy", "train_eval_only"]


def test_run_curves_png_gan_and_empty(tmp_path):
    gan = {"d_loss": [0.7, 0.6], "g_loss": [0.9, 1.1]}
    _assert_png(tmp_path / "g.png", figures.run_curves_png(gan, tmp_path / "g.png", "gan"))
    empty = tmp_path / "empty" / "e.png"
    _assert_png(empty, figures.run_curves_png({}, empty, "nothing"))


def test_learning_curves_png(tmp_path):
    histories = {
        "fnn": {"loss": [1.0, 0.5], "val_loss": [1.1, 0.6], "accuracy": [0.6, 0.8]},
        "rnn": {"loss": [0.3, 0.2, 0.1], "val_loss": [0.35, 0.25, 0.2]},
        "gan": {"d_loss": [0.7, 0.6], "g_loss": [0.9, 1.1]},
        "broken": {},
    }
    path = tmp_path / "learning_curves.png"
    _assert_png(path, figures.learning_curves_png(histories, path))
    none = tmp_path / "none" / "l.png"
    _assert_png(none, figures.learning_curves_png({}, none))


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "confusion.png"
    path.write_bytes(b"old")

    def broken_savefig(self, handle, **kwargs):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError):
        figures.confusion_matrix_png([[1, 0], [0, 1]], ["a", "b"], path, "x")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]


def test_figures_leave_pyplot_alone(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    figures.scatter_true_pred_png([0, 1], [0, 1], tmp_path / "s.png", "x")
    assert plt.get_fignums() == before

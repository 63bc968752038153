"""PNG figures for people: confusion matrices, forecasts, samples, learning curves, gradient
norms and fit studies."""

# Figures are drawn on a bare Figure with the Agg canvas rather than through pyplot, so no global
# backend or figure state is touched (safe under DVC, MLflow and tests). Every function writes its
# PNG atomically beside the target and returns the path.

from __future__ import annotations

import math
import os
import textwrap
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from deepfit.outputs import TRAIN_EVAL

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
# Keras logs these beside the metrics when a schedule is used; they are not learning curves.
NOT_CURVES = frozenset({"lr", "learning_rate"})
# Above this many classes the cell counts become unreadable, so only the colours are kept.
MAX_ANNOTATED_CLASSES = 20


def confusion_matrix_png(
    cm: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    title: str,
) -> Path:
    """Heat map of a confusion matrix (rows true, columns predicted) with counts in the cells."""
    counts = np.asarray(cm)
    k = counts.shape[0]
    if counts.shape != (k, k) or len(class_names) != k:
        raise ValueError(f"confusion matrix {counts.shape} does not match {len(class_names)} names")
    side = min(12.0, max(4.0, 0.45 * k + 2.0))
    fig = new_figure((side + 1.0, side))
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="samples")
    ax.set_xticks(range(k), labels=list(class_names), rotation=45 if k > 10 else 0)
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title}: confusion matrix (accuracy {accuracy:.3f})")
    if k <= MAX_ANNOTATED_CLASSES:
        _annotate_cells(ax, counts)
    return save_png(fig, path)


def forecast_png(
    years: Sequence[float] | np.ndarray,
    actual: ArrayLike,
    predicted: ArrayLike,
    baseline_predicted: ArrayLike | None,
    path: str | os.PathLike[str],
    title: str,
    *,
    baseline_label: str = "AR baseline",
    ylabel: str = "value (original units)",
) -> Path:
    """One-step-ahead forecast against the actual series, optionally beside a baseline."""
    fig = new_figure((9.0, 4.0))
    ax = fig.add_subplot()
    x = np.asarray(years)
    ax.plot(x, np.ravel(actual), color="black", marker="o", markersize=3, label="actual")
    ax.plot(x, np.ravel(predicted), color="tab:blue", label="model")
    if baseline_predicted is not None:
        ax.plot(x, np.ravel(baseline_predicted), color="tab:orange", ls="--", label=baseline_label)
    ax.set_xlabel("year")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}: one-step-ahead forecast on the test years")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, path)


def scatter_true_pred_png(
    y_true: ArrayLike, y_pred: ArrayLike, path: str | os.PathLike[str], title: str
) -> Path:
    """Predicted against true targets, with the identity line a perfect model would sit on."""
    true = np.ravel(np.asarray(y_true, dtype=np.float64))
    pred = np.ravel(np.asarray(y_pred, dtype=np.float64))
    fig = new_figure((5.0, 5.0))
    ax = fig.add_subplot()
    # Thousands of points: small and translucent so density stays visible.
    ax.scatter(true, pred, s=6, alpha=0.4, edgecolors="none", label="test samples")
    both = np.concatenate([true, pred])
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="perfect prediction")
    mse = float(np.mean((pred - true) ** 2)) if true.size else float("nan")
    ax.set_xlabel("true target")
    ax.set_ylabel("predicted target")
    ax.set_title(f"{title}: predictions (test MSE {mse:.4f})")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return save_png(fig, path)


def image_grid_png(
    images: ArrayLike, path: str | os.PathLike[str], title: str, ncols: int = 10
) -> Path:
    """A grid of images (n, H, W[, C]) with values in [0, 1], e.g. GAN samples."""
    mosaic = _mosaic(np.asarray(images, dtype=np.float64), ncols)
    rows, cols = mosaic.shape[:2]
    scale = 6.0 / max(rows, cols)
    fig = new_figure((max(3.0, cols * scale), max(3.0, rows * scale) + 0.5))
    ax = fig.add_subplot()
    gray = mosaic.ndim == 2
    ax.imshow(mosaic, cmap="gray" if gray else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title)
    return save_png(fig, path)


def _panels(count: int) -> tuple[Figure, list[Axes]]:
    """A figure with ``count`` panels (at least one), three per row."""
    n = max(1, count)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = new_figure((4.5 * ncols, 3.4 * nrows))
    return fig, list(fig.subplots(nrows, ncols, squeeze=False).ravel())


def run_curves_png(
    history: Mapping[str, Sequence[float]], path: str | os.PathLike[str], title: str
) -> Path:
    """One run's learning curves: a panel per metric, training solid and validation dashed."""
    metrics = _metric_names(history)
    fig, axes = _panels(len(metrics))
    for ax, metric in zip(axes, metrics, strict=False):
        _plot_pair(ax, history, metric, color="tab:blue")
        ax.set_title(metric)
    if not metrics:
        empty_panel(axes[0], "no curves recorded")
    for ax in axes[len(metrics) or 1 :]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: learning curves ({_line_styles([history])})")
    return save_png(fig, path)


def learning_curves_png(
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | os.PathLike[str],
    title: str = "Learning curves of all runs",
    titles: Mapping[str, str] | None = None,
) -> Path:
    """Loss curves of every run, one panel per run (losses differ in scale between tasks);
    ``titles`` optionally replaces a run's panel title (the report adds the fit verdict)."""
    names = list(histories)
    fig, axes = _panels(len(names))
    for ax, name in zip(axes, names, strict=False):
        history = histories[name]
        losses = _loss_names(history)
        for metric, color in zip(losses, colors(), strict=False):
            _plot_pair(ax, history, metric, color=color)
        if not losses:
            empty_panel(ax, "no loss curves")
        ax.set_ylabel("loss")
        ax.set_title((titles or {}).get(name, name))
    if not names:
        empty_panel(axes[0], "no runs")
    for ax in axes[len(names) or 1 :]:
        ax.set_visible(False)
    fig.suptitle(f"{title} ({_line_styles(histories.values())})")
    return save_png(fig, path)


def _line_styles(histories: Iterable[Mapping[str, Sequence[float]]]) -> str:
    scored = any(key.startswith(TRAIN_EVAL) for history in histories for key in history)
    extra = ", training rows scored as validation dotted" if scored else ""
    return f"training solid{extra}, validation dashed"


# --- helpers --------------------------------------------------------------------------------


def gradient_norms_png(
    records: Sequence[Mapping[str, float]], path: str | os.PathLike[str], title: str
) -> Path:
    """Per-layer gradient norm against epoch on a log scale, first layer darkest."""
    fig = new_figure((6.5, 4.2))
    ax = fig.add_subplot()
    layers = list(records[0]) if records else []
    _gradient_lines(ax, records, layers)
    if not layers:
        empty_panel(ax, "no gradient norms recorded")
    fig.suptitle(f"{title}: gradient norm per layer")
    return save_png(fig, path)


def _gradient_lines(ax: Axes, records: Sequence[Mapping[str, float]], layers: list[str]) -> None:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    epochs = range(1, len(records) + 1)
    for i, layer in enumerate(layers):
        ax.plot(
            epochs,
            [max(r[layer], 1e-30) for r in records],
            color=cmap(i / max(1, len(layers) - 1)),
            label=layer,
        )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("gradient norm (data loss, fixed batch)")
    ax.grid(alpha=0.3, which="both")
    if layers:
        ax.legend(fontsize=7, ncol=2)


def new_figure(size: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to a temp file beside ``path``, then rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    # os.open with 0o666 honours the umask; tempfile.mkstemp would leave the figure owner-only
    # (0600), unreadable to an MLflow server or a teammate sharing the DVC cache.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format="png", dpi=DPI)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _annotate_cells(ax: Axes, counts: np.ndarray) -> None:
    threshold = counts.max() / 2 if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        color = "white" if value > threshold else "black"
        ax.text(j, i, f"{value:g}", ha="center", va="center", color=color, fontsize=8)


def _mosaic(images: np.ndarray, ncols: int, pad: int = 1) -> np.ndarray:
    """Tile images into one array with a white border, so the grid is a single fast imshow."""
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or images.shape[0] == 0:
        raise ValueError(f"images must have shape (n, H, W[, C]) with n > 0, got {images.shape}")
    n, h, w = images.shape[:3]
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    canvas = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, *images.shape[3:]))
    for index, image in enumerate(np.clip(images, 0.0, 1.0)):
        r, c = divmod(index, ncols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        canvas[top : top + h, left : left + w] = image
    return canvas


def _metric_names(history: Mapping[str, Sequence[float]]) -> list[str]:
    """Training metric names; a validation-only key still gets its own panel (the training
    rows scored as validation is, ``train_eval_*``, are drawn in their metric's panel)."""
    names = []
    for key in history:
        base = key.removeprefix("val_")
        if base.startswith(TRAIN_EVAL) and base.removeprefix(TRAIN_EVAL) in history:
            continue
        if base not in NOT_CURVES and base not in names:
            names.append(base)
    return names


def _loss_names(history: Mapping[str, Sequence[float]]) -> list[str]:
    if "loss" in history:
        return ["loss"]
    # A GAN has no single "loss"; show each of its losses instead.
    return [name for name in _metric_names(history) if "loss" in name]


def _plot_pair(ax: Axes, history: Mapping[str, Sequence[float]], metric: str, color: str) -> None:
    from matplotlib.ticker import MaxNLocator

    lines = (
        (metric, "-", "train"),
        (f"{TRAIN_EVAL}{metric}", ":", "train, scored as val"),
        (f"val_{metric}", "--", "val"),
    )
    for key, style, label in lines:
        values = history.get(key)
        if values is not None and len(values):
            epochs = range(1, len(values) + 1)
            ax.plot(epochs, values, ls=style, color=color, label=f"{metric} ({label})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def colors() -> list[str]:
    return ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


def empty_panel(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def fit_png(
    losses: tuple[Sequence[float], Sequence[float]],
    smoothed_val: Sequence[float],
    fit: Mapping[str, object],
    noise_multiple: float,
    path: str | os.PathLike[str],
    title: str,
) -> Path:
    """The fit verdict drawn on the loss curves: training and validation loss, the smoothed
    validation curve the rules read, its best epoch and the noise band above it; the verdict
    and its reasons in the title."""
    train, val = losses
    epochs = range(1, len(train) + 1)
    fig = new_figure((8.0, 4.6))
    ax = fig.add_subplot()
    scored = str(fit.get("train_curve", "")).startswith(TRAIN_EVAL)
    label = "training loss, scored as validation" if scored else "training loss"
    ax.plot(epochs, train, color="tab:blue", label=label)
    ax.plot(epochs, val, color="tab:orange", ls="--", alpha=0.6, label="validation loss")
    ax.plot(epochs, smoothed_val, color="tab:orange", lw=2.2, label="validation, smoothed")
    best, level, noise = fit.get("best_epoch"), fit.get("smoothed_val_best"), fit.get("val_noise")
    if isinstance(best, int) and isinstance(level, float) and isinstance(noise, float):
        ax.axvline(best, color="0.4", lw=1, ls=":", label=f"best epoch {best}")
        top = level + noise_multiple * noise
        ax.axhspan(
            level, top, color="tab:orange", alpha=0.12, label=f"best + {noise_multiple:g}× noise"
        )
    ax.set_xlabel("epoch")
    finite = [v for v in (*train, *val) if math.isfinite(v)]
    if finite and min(finite) > 0:  # a rise of 0.01 on a loss of 0.1 shows on a log scale
        ax.set_yscale("log")
    ax.set_ylabel("loss (log scale)" if ax.get_yscale() == "log" else "loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    reasons = "\n".join(textwrap.wrap(str(fit.get("reasons", "")), 110))
    ax.set_title(f"{title}: {fit.get('verdict', '?')}\n{reasons}", fontsize=8, loc="left")
    return save_png(fig, path)

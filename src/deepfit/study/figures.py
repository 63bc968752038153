"""A study's figure: capacity curves, regularisation gaps, activation gradient flow, or how far
back a recurrent network's gradient reaches."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfit.evaluate.diagnosis import VANISHED_REACH
from deepfit.figures import colors, empty_panel, new_figure, save_png

if TYPE_CHECKING:
    from matplotlib.axes import Axes


VERDICT_COLORS = {
    "underfit": "tab:blue",
    "good": "tab:green",
    "overfit": "tab:red",
    "diverged": "black",
}


def study_png(
    kind: str,
    points: Sequence[Mapping[str, object]],
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    gradients: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | os.PathLike[str],
    title: str,
    through_time: Mapping[str, Mapping[int, Sequence[float]]] | None = None,
) -> Path:
    """A study's figure: capacity curves, regularisation gaps, activation gradient flow, or the
    gradient's reach back through time by window length.

    Every kind but capacity and sequence_length has the variants' loss curves overlaid on the
    left (training solid, validation dashed) and, on the right, what the study is about;
    verdicts colour the markers and labels.
    """
    fig = new_figure((12, 4.6))
    left, right = fig.subplots(1, 2)
    if kind == "capacity":
        _capacity(left, right, points)
    elif kind == "sequence_length":
        _reach_by_length(left, points)
        _through_time(right, through_time or {})
    else:
        _curves_overlay(left, histories)
        if kind == "regularisation":
            _gap_bars(right, points)
        else:
            last = {name: records[:1] for name, records in gradients.items()}
            _layer_profiles(right, last)
    fig.suptitle(f"Study {title} ({kind})")
    return save_png(fig, path)


def _capacity(loss_ax: Axes, error_ax: Axes, points: Sequence[Mapping[str, object]]) -> None:
    """Loss (log scale) and error rate against parameter count, markers coloured by verdict."""
    sizes = [p["params"] for p in points]
    series = (
        (loss_ax, "loss (log scale)", ("train_loss_last", "val_loss_best", "val_loss_last")),
        (error_ax, "error rate", ("train_error_last", "val_error_best")),
    )
    styles = {"train": ("-", "training (last epoch)"), "val": ("--", "validation (best epoch)")}
    for ax, label, keys in series:
        if not all(p.get(k) is not None for p in points for k in keys):
            empty_panel(ax, f"no {label} recorded")
            continue
        for key in keys:
            style, name = styles[key.split("_")[0]]
            if key == "val_loss_last":
                style, name = ":", "validation (last epoch)"
            ax.plot(sizes, [p[key] for p in points], style, color="0.3", label=name)
            for p in points:
                ax.plot(p["params"], p[key], "o", color=VERDICT_COLORS.get(str(p["verdict"])), ms=6)
        for p in points:
            ax.annotate(
                str(p["verdict"]),
                (p["params"], max(p[k] for k in keys)),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=8,
                color=VERDICT_COLORS.get(str(p["verdict"]), "grey"),
            )
        ax.set_xscale("log")
        if "log" in label:
            ax.set_yscale("log")
        ax.set_xlabel("parameters (log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)


def _curves_overlay(ax: Axes, histories: Mapping[str, Mapping[str, Sequence[float]]]) -> None:
    for (name, history), color in zip(histories.items(), colors() * 3, strict=False):
        for key, style in (("loss", "-"), ("val_loss", "--")):
            values = history.get(key, [])
            ax.plot(
                range(1, len(values) + 1),
                values,
                ls=style,
                color=color,
                label=name if key == "loss" else None,
            )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (log scale)")
    ax.set_title("training solid, validation dashed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _gap_bars(ax: Axes, points: Sequence[Mapping[str, object]]) -> None:
    names = [str(p["variant"]) for p in points]
    gaps = [float(p["skill_gap"]) for p in points]
    colors = [VERDICT_COLORS.get(str(p["verdict"]), "grey") for p in points]
    bars = ax.bar(names, gaps, color=colors)
    for bar, p in zip(bars, points, strict=True):
        ax.annotate(
            f"{p['verdict']}\nval rise {float(p['val_rise']):.0%}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=8,
        )
    ax.set_ylabel("skill gap at best epoch (training - validation)")
    ax.set_title("generalisation gap and verdict per variant")
    ax.grid(alpha=0.3, axis="y")


def _layer_profiles(ax: Axes, records: Mapping[str, Sequence[Mapping[str, float]]]) -> None:
    for (name, first), color in zip(records.items(), colors() * 3, strict=False):
        if not first:
            continue
        layers = list(first[0])
        ax.plot(
            range(1, len(layers) + 1),
            [max(first[0][k], 1e-30) for k in layers],
            "o-",
            color=color,
            label=name,
        )
        ax.set_xticks(range(1, len(layers) + 1), layers, rotation=45, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("gradient norm after epoch 1 (log scale)")
    ax.set_title("gradient flow: input layer on the left")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def _reach_by_length(ax: Axes, points: Sequence[Mapping[str, Any]]) -> None:
    """Gradient reach (log scale) against window length, one line per variant."""
    for p, color in zip(points, colors() * 3, strict=False):
        lengths = sorted(int(k.removeprefix("reach_")) for k in p if k.startswith("reach_"))
        reach = [max(float(p[f"reach_{n}"]), 1e-30) for n in lengths]
        label = (
            str(p["variant"]) if p["variant"] == p["model"] else f"{p['variant']} ({p['model']})"
        )
        ax.plot(lengths, reach, "o-", color=color, label=label)
    ax.axhline(VANISHED_REACH, color="0.5", ls=":", label="float32 resolution")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("window length (characters, log scale)")
    ax.set_ylabel("gradient reach: first / last position (log; 0 at 1e-30)")
    ax.set_title("how much gradient reaches a window's first character")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def _through_time(ax: Axes, norms: Mapping[str, Mapping[int, Sequence[float]]]) -> None:
    """Gradient norm by distance back from the last position, in the longest windows."""
    longest = max((n for by_length in norms.values() for n in by_length), default=0)
    for (name, by_length), color in zip(norms.items(), colors() * 3, strict=False):
        values = by_length.get(longest, [])
        ax.plot(range(len(values)), [max(v, 1e-30) for v in values], color=color, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("distance back from the last position (characters)")
    ax.set_ylabel("mean gradient norm (log scale; 0 at 1e-30)")
    ax.set_title(f"gradients through time, windows of {longest} characters")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)

"""A search's figures: optimisation history, parameter importances, and the learning curves of
every trial, pruned ones included."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfit.figures import empty_panel, new_figure, save_png

if TYPE_CHECKING:
    import optuna

    from deepfit.config import TuningConfig

_STYLE = {"complete": ("tab:blue", "-", 0.9), "pruned": ("tab:orange", "--", 0.6)}


def search_figures(
    study: optuna.Study, search: TuningConfig, summary: dict[str, Any], folder: Path
) -> list[Path]:
    """Write the three figures into ``folder``; return their paths."""
    return [
        history_png(summary, folder / "history.png"),
        importance_png(summary, folder / "importance.png"),
        curves_png(study, search, summary, folder / "curves.png"),
    ]


def history_png(summary: dict[str, Any], path: Path) -> Path:
    """Each trial's value by trial number, coloured by state, and the best so far."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure((8.0, 4.2))
    ax = fig.add_subplot()
    metric, sign = summary["metric"], 1 if summary["direction"] == "minimize" else -1
    trials = [t for t in summary["trials"] if t["value"] is not None]
    for state, (color, _, _) in _STYLE.items():
        points = [t for t in trials if t["state"] == state]
        ax.scatter(
            [t["number"] for t in points],
            [t["value"] for t in points],
            color=color,
            label=f"{state} ({len(points)})",
            zorder=3,
        )
    best, xs, ys = math.inf, [], []
    for t in (t for t in trials if t["state"] == "complete"):
        best = min(best, sign * t["value"])
        xs.append(t["number"])
        ys.append(sign * best)
    if xs:
        ax.step(xs, ys, where="post", color="black", label="best so far")
    failed = summary["counts"].get("failed", 0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{metric} (pruned: at the last epoch run)")
    ax.set_title(f"{summary['search']}: optimisation history ({failed} failed, not shown)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def importance_png(summary: dict[str, Any], path: Path) -> Path:
    """Optuna's parameter importances as horizontal bars."""
    fig = new_figure((7.0, 3.6))
    ax = fig.add_subplot()
    found = summary["importances"]
    if not found:
        empty_panel(ax, "importances need two or more complete trials that differ")
    else:
        keys = list(found)[::-1]
        ax.barh(keys, [found[k] for k in keys], color="tab:blue")
        ax.set_xlabel("importance (fANOVA, share of the variance of the value)")
        ax.grid(alpha=0.3, axis="x")
    ax.set_title(f"{summary['search']}: parameter importances")
    return save_png(fig, path)


def curves_png(
    study: optuna.Study, search: TuningConfig, summary: dict[str, Any], path: Path
) -> Path:
    """Validation curve of the search metric per epoch, every trial (pruned ones dashed, up to
    the epoch they were stopped at); the best trial thick."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure((8.0, 4.6))
    ax = fig.add_subplot()
    best = (summary["best"] or {}).get("trial")
    drawn = 0
    for trial in study.get_trials(deepcopy=False):
        state = "pruned" if trial.state.name == "PRUNED" else trial.state.name.lower()
        values = (trial.user_attrs.get("deepfit.history") or {}).get(search.metric)
        if not values or state not in ("complete", "pruned"):
            continue
        color, style, alpha = _STYLE["complete" if state == "complete" else "pruned"]
        width = 2.6 if trial.number == best else 1.0
        label = f"trial {trial.number} (best)" if trial.number == best else None
        epochs = range(1, len(values) + 1)
        ax.plot(epochs, values, ls=style, color=color, alpha=alpha, lw=width, label=label)
        drawn += 1
    if not drawn:
        empty_panel(ax, "no trial finished an epoch")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(search.metric)
        ax.grid(alpha=0.3)
        ax.plot([], [], color=_STYLE["complete"][0], label="complete")
        ax.plot([], [], color=_STYLE["pruned"][0], ls="--", label="pruned")
        ax.legend(fontsize=8)
    ax.set_title(f"{search.name}: learning curves of {drawn} trials")
    return save_png(fig, path)

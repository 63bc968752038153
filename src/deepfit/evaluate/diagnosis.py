"""Fit diagnosis: is a run under- or overfitting, and why, judged from the trends of its
per-epoch history rather than from single epochs.

Words (thresholds are the ``fit:`` keys of params.yaml):

- *Training curve*: the loss of ``train.eval_samples`` fixed training rows, scored after every
  epoch in inference mode as the validation split is (``train_eval_loss``). Keras' own ``loss``
  is a running mean over the epoch in training mode: batch-norm layers use batch statistics
  while their moving averages (which validation uses) lag behind early in training, and dropout
  is on, so set beside ``val_loss`` it shows gaps that are not generalisation. A history without
  ``train_eval_loss`` (a Keras ``CSVLogger`` file, ``eval_samples: 0``) is judged on ``loss``.
- *Smoothed* curve: the centred running median over ``w`` epochs; at the ends the window keeps
  its size and shifts inwards (the last ``w // 2 + 1`` epochs all get the median of the last
  ``w`` epochs). ``w`` is ``smoothing``, but at most a quarter of the epochs (made odd; 1, no
  smoothing, for runs of fewer than 12 epochs). A median ignores a single spike, even in the last
  epoch.
- *Noise* of a curve: the epoch-to-epoch scatter of its raw values over the last half of the
  epochs (all epochs if that is fewer than 3), estimated robustly as the median absolute second
  difference divided by 1.65, i.e. ``0.6745 * sqrt(6)``. Second differences cancel a locally
  straight trend, and for white noise of standard deviation s this estimate is s.
- *Best epoch*: the epoch of the lowest smoothed validation loss (the first, on a tie); a GAN's
  last epoch. ``*_best`` evidence is at this epoch, ``*_last`` at the last one.
- *Skill*: ``1 - loss / reference loss``, where the reference is the constant predictor fitted
  on the training split (class frequencies for cross-entropy, the training mean for squared
  error), scored on the split in question: 1 is a perfect fit, 0 no better than the constant.
  Training and validation skill are taken from the smoothed curves at the best epoch; the
  *skill gap* is training minus validation skill. A gap in skill, not raw loss, is comparable
  across tasks and fair to a validation split that is harder in itself.
- *Rise*: smoothed validation loss at the last epoch minus at the best epoch; ``rise_skill`` is
  the rise divided by the validation reference loss. ``rise_epochs`` counts the final epochs
  (consecutive, up to the last) whose smoothed validation loss exceeds the best by more than
  ``noise_multiple`` times the validation noise.
- *Gap widening*: the smoothed generalisation gap (validation minus training loss) at the last
  epoch minus at the best epoch: the part of the rise that training loss does not share. Its
  noise is the two curves' noises added in quadrature.

The verdict is one of ``diverged``, ``overfit``, ``underfit`` or ``good``; the first rule that
holds wins:

1. ``diverged``: a loss is NaN or infinite; or the smoothed training loss at the last epoch
   climbed back more than ``diverged_rise`` of the way from its lowest smoothed value to the
   training reference loss, after the model had learned (that lowest value has a training skill
   of at least ``underfit_skill``).
2. ``overfit``: (a) the rise lasts: ``rise_epochs >= min_rise_epochs``, the rise is big:
   ``rise_skill >= overfit_rise_skill``, the gap widened by more than ``noise_multiple`` times
   its noise, and training loss kept learning: its smoothed value at the last epoch is at most
   its value at the best epoch plus ``noise_multiple`` times the training noise (when both
   rise, that is optimisation trouble, not overfitting; the part of the rise they share is not
   overfitting either); or (b) the skill gap is ``overfit_gap`` or more.
3. ``underfit``: training skill below ``underfit_skill``.
4. ``good``: none of the above.

Without a reference loss only the curves can be judged: the rules that need skill (the climb
back, ``rise_skill``, the skill gap, underfit) are skipped and the reasons say so.

A GAN's monitored loss is the discriminator's, against a reference of ``2 ln 2`` (a
discriminator at chance on real and generated images), judged at its last epoch. Only the NaN
rule and the skill gap apply: a discriminator near chance, and its loss rising, are what a
training generator causes. A gap means the discriminator tells training images from validation
images: it memorises (overfit).

Everything here is plain Python over lists of floats, so it is cheap to test on hand-made
histories. ``read_history`` reads a Keras ``CSVLogger`` file or a history JSON for
``deepfit diagnose``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import median
from typing import Any

from deepfit.config import FitConfig
from deepfit.outputs import TRAIN_EVAL

# A recurrent network's gradient through time vanished when its reach (the norm at a window's
# first position over that at its last) is below float32's resolution, 2**-23: what the first
# character adds to the weights' gradient is lost in rounding beside what the last one adds.
VANISHED_REACH = 2.0**-23

VERDICTS = ("diverged", "overfit", "underfit", "good")
GAN_REFERENCE_LOSS = 2 * math.log(2)
# Median absolute second difference of white noise with standard deviation 1.
NOISE_SCALE = 0.6745 * math.sqrt(6)
NO_REFERENCE = (
    "no reference loss: judged from the curves alone, "
    "skill rules (climb back, rise in skill, skill gap, underfit) skipped"
)


class HistoryError(ValueError):
    """A history file that cannot be judged; the message is one line naming the file."""


def reference_losses(y_train: Any, y_val: Any, task: str) -> tuple[float, float]:
    """The constant predictor's loss on the training and validation splits.

    Classification: cross-entropy of always predicting the training class frequencies.
    Regression: mean squared error of always predicting the training mean.
    """
    import numpy as np

    y_train = np.asarray(y_train)
    y_val = np.asarray(y_val)
    if task == "classification":
        train_labels = y_train.astype(int).reshape(-1)
        val_labels = y_val.astype(int).reshape(-1)
        n_classes = int(max(train_labels.max(), val_labels.max())) + 1
        freq = np.bincount(train_labels, minlength=n_classes) / len(train_labels)
        log_freq = np.log(np.maximum(freq, 1e-12))  # a class unseen in training: huge loss
        return float(-log_freq[train_labels].mean()), float(-log_freq[val_labels].mean())
    mean = y_train.mean(axis=0)
    return float(((y_train - mean) ** 2).mean()), float(((y_val - mean) ** 2).mean())


def smoothing_window(epochs: int, smoothing: int) -> int:
    """The running-median window: ``smoothing``, at most a quarter of the epochs, odd."""
    window = min(smoothing, epochs // 4)
    return max(1, window if window % 2 else window - 1)


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Centred running median over ``window`` epochs; at the ends the window keeps its size and
    shifts inwards, so that every value is a median of ``window`` epochs (a spike never wins)."""
    last_start = max(0, len(values) - window)
    starts = (min(max(0, i - window // 2), last_start) for i in range(len(values)))
    return [median(values[start : start + window]) for start in starts]


def noise(values: Sequence[float]) -> float:
    """Epoch-to-epoch noise of a curve's last half (all of it if shorter than 3 epochs):
    median absolute second difference / 1.65, which is s for white noise of deviation s."""
    tail = values[len(values) // 2 :]
    tail = tail if len(tail) >= 3 else values
    seconds = [abs(tail[i + 1] - 2 * tail[i] + tail[i - 1]) for i in range(1, len(tail) - 1)]
    return median(seconds) / NOISE_SCALE if seconds else 0.0


def diagnose(
    history: Mapping[str, Sequence[float]],
    cfg: FitConfig,
    reference: tuple[float, float] | None = None,
    generative: bool = False,
    metric: str | None = None,
) -> dict[str, Any]:
    """The verdict and its evidence for one run.

    ``history`` is Keras' (``loss``/``val_loss``, or ``d_loss``/``val_d_loss`` for a GAN);
    ``reference`` the constant predictor's (training, validation) loss, None to judge the curves
    alone; ``metric`` a further history key (``accuracy``) reported at the best and last epochs.
    """
    monitor = "d_loss" if generative else "loss"
    val = [float(v) for v in history.get(f"val_{monitor}", [])]
    train_key = training_curve(history, monitor)
    train = [float(v) for v in history.get(train_key, [])]
    if not train or len(val) != len(train):
        raise ValueError(f"history needs equally long {monitor!r} and 'val_{monitor}' lists")
    if generative:
        reference = (GAN_REFERENCE_LOSS, GAN_REFERENCE_LOSS)
    if reference is not None and min(reference) <= 0:
        raise ValueError("a positive reference loss for the training and validation splits")
    finite_epochs = [math.isfinite(t) and math.isfinite(v) for t, v in zip(train, val, strict=True)]
    broken = finite_epochs.index(False) if not all(finite_epochs) else None
    # Evidence comes from the epochs before the first NaN or infinity.
    finite = len(train) if broken is None else broken
    evidence = {
        "epochs": len(train),
        "train_curve": train_key,
        **_evidence(train[:finite], val[:finite], cfg, reference, generative),
    }
    train_metric = training_curve(history, metric) if metric else None
    if metric and train_metric in history and f"val_{metric}" in history and finite:
        best = evidence["best_epoch"] - 1
        for split, key in (("train", train_metric), ("val", f"val_{metric}")):
            evidence[f"{split}_{metric}_best"] = history[key][best]
            evidence[f"{split}_{metric}_last"] = history[key][-1]
    if broken is not None:
        verdict, reasons = "diverged", [f"a loss became NaN or infinite at epoch {broken + 1}"]
    else:
        verdict, reasons = _verdict(evidence, cfg, generative)
    if reference is None:
        reasons.append(NO_REFERENCE)
    return {"verdict": verdict, "reasons": "; ".join(reasons), **evidence}


def training_curve(history: Mapping[str, Sequence[float]], name: str) -> str:
    """The history key of the training curve of ``name`` to set beside ``val_<name>``: the fixed
    training rows scored in inference mode as validation is (``train_eval_<name>``, logged by
    deepfit's training) when the history has it for every epoch, else Keras' running ``name``."""
    scored, val = f"{TRAIN_EVAL}{name}", f"val_{name}"
    if scored in history and val in history and len(history[scored]) == len(history[val]):
        return scored
    return name


def _evidence(
    train: list[float],
    val: list[float],
    cfg: FitConfig,
    reference: tuple[float, float] | None,
    generative: bool,
) -> dict[str, Any]:
    """The numbers the rules read, from finite curves (empty ones give NaN evidence)."""
    if not train:
        train, val = [math.nan], [math.nan]
    window = smoothing_window(len(train), cfg.smoothing)
    st, sv = smooth(train, window), smooth(val, window)
    # A GAN keeps its last epoch; a supervised run is judged at its lowest smoothed val loss.
    best = len(val) - 1 if generative else sv.index(min(sv))
    val_noise, train_noise = noise(val), noise(train)
    limit = sv[best] + cfg.noise_multiple * val_noise
    rise_epochs = next((k for k, v in enumerate(reversed(sv)) if not v > limit), len(sv))
    e: dict[str, Any] = {
        "best_epoch": best + 1,
        "smoothing": window,
        "train_loss_best": train[best],
        "train_loss_last": train[-1],
        "val_loss_best": val[best],
        "val_loss_last": val[-1],
        "gap_best": val[best] - train[best],
        "gap_last": val[-1] - train[-1],
        "smoothed_train_best": st[best],
        "smoothed_train_last": st[-1],
        "smoothed_train_lowest": min(st),
        "smoothed_val_best": sv[best],
        "smoothed_val_last": sv[-1],
        "train_noise": train_noise,
        "val_noise": val_noise,
        "val_rise": (sv[-1] - sv[best]) / abs(sv[best]) if sv[best] else 0.0,
        "rise_epochs": rise_epochs,
        "train_rise": st[-1] - st[best],
        "gap_widening": (sv[-1] - st[-1]) - (sv[best] - st[best]),
        "gap_noise": math.hypot(val_noise, train_noise),
    }
    skills = _skills(e, reference)
    if generative:
        skills["train_climb"] = None  # a discriminator's loss climbing is no divergence
    return {**e, **skills}


def _skills(e: Mapping[str, Any], reference: tuple[float, float] | None) -> dict[str, Any]:
    """Skill evidence; None throughout without a reference loss."""
    keys = ("train_skill", "val_skill", "skill_gap", "rise_skill", "train_climb")
    if reference is None:
        return dict.fromkeys((*keys, "reference_train_loss", "reference_val_loss"))
    ref_train, ref_val = reference
    lowest = e["smoothed_train_lowest"]
    climb = (e["smoothed_train_last"] - lowest) / (ref_train - lowest) if ref_train > lowest else 0
    train_skill = 1 - e["smoothed_train_best"] / ref_train
    val_skill = 1 - e["smoothed_val_best"] / ref_val
    return {
        "train_skill": train_skill,
        "val_skill": val_skill,
        "skill_gap": train_skill - val_skill,
        "rise_skill": (e["smoothed_val_last"] - e["smoothed_val_best"]) / ref_val,
        "train_climb": climb,
        "reference_train_loss": ref_train,
        "reference_val_loss": ref_val,
    }


def _verdict(e: Mapping[str, Any], cfg: FitConfig, generative: bool) -> tuple[str, list[str]]:
    skilled = e["reference_train_loss"] is not None
    if not generative and skilled:
        lowest, reference = e["smoothed_train_lowest"], e["reference_train_loss"]
        # Only a model that had learned can climb back: one hovering at the constant
        # predictor's loss just wobbles, and is judged underfit.
        learned = 1 - lowest / reference >= cfg.underfit_skill
        if learned and e["train_climb"] > cfg.diverged_rise:
            return "diverged", [
                f"smoothed training loss climbed back {e['train_climb']:.0%} of the way from its "
                f"lowest {lowest:.3g} to the constant predictor's {reference:.3g} "
                f"(limit {cfg.diverged_rise:.0%})"
            ]
    overfit = [] if generative else _rise_reasons(e, cfg)
    if skilled and e["skill_gap"] >= cfg.overfit_gap:
        overfit.append(
            f"skill gap {e['skill_gap']:.2f} at the best epoch {e['best_epoch']} "
            f"(training {e['train_skill']:.2f}, validation {e['val_skill']:.2f}; "
            f"limit {cfg.overfit_gap:.2f})"
        )
    if overfit:
        return "overfit", overfit
    if not generative and skilled and e["train_skill"] < cfg.underfit_skill:
        return "underfit", [
            f"training skill {e['train_skill']:.2f} at the best epoch {e['best_epoch']} is below "
            f"{cfg.underfit_skill:.2f}: the model does not even fit its training data"
        ]
    return "good", [_good_reason(e, cfg, generative)]


def _rise_reasons(e: Mapping[str, Any], cfg: FitConfig) -> list[str]:
    """The lasting, noise-significant rise of validation loss (empty when there is none)."""
    rise = e["smoothed_val_last"] - e["smoothed_val_best"]
    big = e["rise_skill"] is None or e["rise_skill"] >= cfg.overfit_rise_skill
    kept_learning = e["train_rise"] <= cfg.noise_multiple * e["train_noise"]
    widened = e["gap_widening"] > cfg.noise_multiple * e["gap_noise"]
    if e["rise_epochs"] < cfg.min_rise_epochs or not big or not kept_learning or not widened:
        return []
    in_skill = "" if e["rise_skill"] is None else f", {e['rise_skill']:.3f} in skill"
    return [
        f"smoothed validation loss rose {rise:.3g} ({e['val_rise']:.0%}{in_skill}; limit "
        f"{cfg.overfit_rise_skill:g}) from {e['smoothed_val_best']:.3g} at its best epoch "
        f"{e['best_epoch']}, staying above {cfg.noise_multiple:g}x its noise {e['val_noise']:.2g} "
        f"for the last {e['rise_epochs']} epochs (limit {cfg.min_rise_epochs}) while training "
        f"loss kept learning: the gap widened {e['gap_widening']:.3g}, above "
        f"{cfg.noise_multiple:g}x its noise {e['gap_noise']:.2g}"
    ]


def _good_reason(e: Mapping[str, Any], cfg: FitConfig, generative: bool) -> str:
    if generative:
        return (
            f"discriminator loss {e['smoothed_train_last']:.3g} on training and "
            f"{e['smoothed_val_last']:.3g} on validation images (smoothed, chance: "
            f"{GAN_REFERENCE_LOSS:.3g}): it does not tell them apart"
        )
    rise = e["smoothed_val_last"] - e["smoothed_val_best"]
    text = (
        f"best epoch {e['best_epoch']} of {e['epochs']}; smoothed validation loss "
        f"{e['smoothed_val_best']:.3g} there, {e['smoothed_val_last']:.3g} at the end (rise "
        f"{rise:.2g}, noise {e['val_noise']:.2g}, {e['rise_epochs']} epochs above "
        f"{cfg.noise_multiple:g}x noise; gap to training widened {e['gap_widening']:.2g}, "
        f"noise {e['gap_noise']:.2g})"
    )
    if e["reference_train_loss"] is None:
        return text
    return text + (
        f"; training skill {e['train_skill']:.2f}, validation skill {e['val_skill']:.2f}, "
        f"rise in skill {e['rise_skill']:.3f}"
    )


def fit_figure(
    history: Mapping[str, Sequence[float]],
    fit: Mapping[str, Any],
    cfg: FitConfig,
    path: str | Path,
    title: str,
) -> Path:
    """The verdict drawn on the loss curves (``deepfit.figures.fit_png``): what the rules saw."""
    from deepfit import figures

    monitor = "loss" if "loss" in history else "d_loss"
    train = list(history[fit.get("train_curve") or monitor])
    val = list(history[f"val_{monitor}"])
    window = smoothing_window(len(val), cfg.smoothing)
    finite = [v for v in val if math.isfinite(v)] or [math.nan]
    smoothed = smooth(finite, window) + [math.nan] * (len(val) - len(finite))
    return figures.fit_png((train, val), smoothed, fit, cfg.noise_multiple, path, title)


def read_history(path: str | Path) -> dict[str, list[float]]:
    """Per-epoch curves from a Keras ``CSVLogger`` file or a history JSON (``{"loss": [...]}``).

    A GAN's ``d_loss``/``val_d_loss`` stand in for ``loss``/``val_loss``. ``nan`` and ``inf``
    are losses (a diverged run); a cell that is no number is a ``HistoryError``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HistoryError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HistoryError(f"{path}: is a directory, not a history file") from None
    except UnicodeDecodeError:
        raise HistoryError(f"{path}: not a text file (expected CSV or JSON)") from None
    if not text.strip():
        raise HistoryError(f"{path}: empty file")
    if text.lstrip().startswith(("{", "[")):
        history, kind = _json_history(path, text), "key"
    else:
        history, kind = _csv_history(path, text), "column"
    pair = ("d_loss", "val_d_loss") if "loss" not in history and "d_loss" in history else None
    for key in pair or ("loss", "val_loss"):
        if key not in history:
            raise HistoryError(f"{path}: no {key!r} {kind} (found: {', '.join(history) or 'none'})")
    return history


def _json_history(path: Path, text: str) -> dict[str, list[float]]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HistoryError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(raw, dict):
        raise HistoryError(f'{path}: expected a JSON object like {{"loss": [...], ...}}')
    history: dict[str, list[float]] = {}
    for key, values in raw.items():
        if not isinstance(values, list):
            raise HistoryError(f"{path}: key {key!r} is not a list of per-epoch values")
        for epoch, value in enumerate(values, start=1):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise HistoryError(f"{path}: key {key!r}, epoch {epoch}: {value!r} is no number")
        history[key] = [float(v) for v in values]
    lengths = {len(v) for v in history.values()}
    if lengths == {0} or not lengths:
        raise HistoryError(f"{path}: no epochs")
    if len(lengths) > 1:
        counts = ", ".join(f"{k} {len(v)}" for k, v in history.items())
        raise HistoryError(f"{path}: keys have different numbers of epochs ({counts})")
    return history


def _csv_history(path: Path, text: str) -> dict[str, list[float]]:
    rows = list(csv.reader(text.splitlines()))
    header = [name.strip() for name in rows[0]]
    if len(header) < 2:
        raise HistoryError(f"{path}: not a CSV history (line 1 is no header like epoch,loss,...)")
    body = [(n, row) for n, row in enumerate(rows[1:], start=2) if row]
    if not body:
        raise HistoryError(f"{path}: no epochs (header only)")
    history: dict[str, list[float]] = {name: [] for name in header if name != "epoch"}
    for line, row in body:
        if len(row) != len(header):
            raise HistoryError(
                f"{path}: line {line} has {len(row)} cells, the header {len(header)}"
            )
        for name, cell in zip(header, row, strict=True):
            if name == "epoch":
                continue
            try:
                history[name].append(float(cell))
            except ValueError:
                raise HistoryError(
                    f"{path}: line {line}, column {name!r}: {cell.strip()!r} is no number"
                ) from None
    return history


def gradient_summary(records: Sequence[Mapping[str, float]], cfg: FitConfig) -> dict[str, Any]:
    """Which layers' gradients vanished or exploded, from per-epoch per-layer gradient norms.

    ``records`` holds one ``{layer: norm}`` per epoch, layers in forward order. A layer's
    gradient *vanished* when its median norm is below ``vanishing_ratio`` times the largest
    median norm of its network (a GAN's generator and discriminator are judged apart; their
    layer names carry a ``generator/`` or ``discriminator/`` prefix); it *exploded* when its
    norm exceeded ``exploding_norm`` in any epoch.
    """
    if not records:
        return {}
    layers = list(records[0])
    medians = {name: median(r[name] for r in records) for name in layers}
    peak: dict[str, float] = {}
    for name, value in medians.items():
        group = name.split("/")[0] if "/" in name else ""
        peak[group] = max(peak.get(group, 0.0), value)
    vanished = [
        name
        for name, value in medians.items()
        if value < cfg.vanishing_ratio * peak[name.split("/")[0] if "/" in name else ""]
    ]
    exploded = [name for name in layers if any(r[name] > cfg.exploding_norm for r in records)]
    first, last = layers[0], layers[-1]
    return {
        "layers": len(layers),
        "first_layer": first,
        "last_layer": last,
        "first_norm_median": medians[first],
        "last_norm_median": medians[last],
        "first_norm_epoch1": records[0][first],
        "first_to_last": medians[first] / medians[last] if medians[last] else None,
        "vanished": ",".join(vanished),
        "vanished_count": len(vanished),
        "exploded": ",".join(exploded),
        "exploded_count": len(exploded),
    }


def mlflow_payload(
    fit: Mapping[str, Any], gradients: Mapping[str, Any]
) -> tuple[dict[str, float], dict[str, str]]:
    """Sortable MLflow metrics (``fit.*``, ``gradients.*``) and tags (verdict, reasons, layers)."""
    metrics = {
        f"{section}.{key}": float(value)
        for section, values in (("fit", fit), ("gradients", gradients))
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
    tags = {"deepfit.fit.verdict": str(fit["verdict"]), "deepfit.fit.reasons": str(fit["reasons"])}
    if gradients:
        tags["deepfit.gradients.vanished"] = gradients["vanished"] or "none"
        tags["deepfit.gradients.exploded"] = gradients["exploded"] or "none"
    return metrics, tags

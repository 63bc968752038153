"""Fit diagnosis: is a run under- or overfitting, and why, from its per-epoch history.

The verdict is one of ``diverged``, ``overfit``, ``underfit`` or ``good``; the first rule that
holds wins (thresholds are the ``fit:`` keys of params.yaml):

1. ``diverged``: a loss is NaN or infinite, or the training loss climbed back more than
   ``diverged_rise`` of the way from its lowest value to the reference loss (defined below):
   the model lost what it had learned.
2. ``overfit``: validation loss rose by ``overfit_rise`` or more (relative) after its best epoch,
   or the skill gap at the best epoch is ``overfit_gap`` or more.
3. ``underfit``: training skill at the best epoch is below ``underfit_skill``.
4. ``good``: none of the above.

*Skill* is ``1 - loss / reference loss``, where the reference is the constant predictor fitted
on the training split (class frequencies for cross-entropy, the training mean for squared
error), scored on the split in question: 1 is a perfect fit, 0 no better than the constant. The
*skill gap* is training skill minus validation skill at the best epoch. Measuring the gap in
skill, not raw loss, makes it comparable across tasks and fair to a validation split that is
harder in itself (the sunspot cycles of the validation years are larger than the training
years'; a raw loss gap would call that overfitting).

A GAN's monitored loss is the discriminator's, against a reference of ``2 ln 2`` (a
discriminator at chance on real and generated images). Neither the underfit rule nor the rise
rule applies: a discriminator near chance, and its loss rising, are what a training generator
causes. A gap means the discriminator tells training images from validation images: it
memorises (overfit).

Everything here is plain Python over lists of floats, so it is cheap to test on hand-made
histories.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any

from deepfit.config import FitConfig

VERDICTS = ("diverged", "overfit", "underfit", "good")
GAN_REFERENCE_LOSS = 2 * math.log(2)


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


def diagnose(
    history: Mapping[str, Sequence[float]],
    cfg: FitConfig,
    reference: tuple[float, float] | None = None,
    generative: bool = False,
    metric: str | None = None,
) -> dict[str, Any]:
    """The verdict and its evidence for one run.

    ``history`` is Keras' (``loss``/``val_loss``, or ``d_loss``/``val_d_loss`` for a GAN);
    ``reference`` the constant predictor's (training, validation) loss; ``metric`` a further
    history key (``accuracy``) whose best-epoch and last values are reported too.
    """
    monitor = "d_loss" if generative else "loss"
    train, val = list(history.get(monitor, [])), list(history.get(f"val_{monitor}", []))
    if not train or len(val) != len(train):
        raise ValueError(f"history needs equally long {monitor!r} and 'val_{monitor}' lists")
    if generative:
        reference = (GAN_REFERENCE_LOSS, GAN_REFERENCE_LOSS)
    if reference is None or min(reference) <= 0:
        raise ValueError("a positive reference loss for the training and validation splits")

    finite = [v for v in val if math.isfinite(v)]
    # A GAN keeps its last epoch; a supervised run is judged at its lowest validation loss.
    best = len(val) - 1 if generative or not finite else val.index(min(finite))
    evidence: dict[str, Any] = {
        "epochs": len(train),
        "best_epoch": best + 1,
        "train_loss_best": train[best],
        "train_loss_last": train[-1],
        "val_loss_best": val[best],
        "val_loss_last": val[-1],
        "gap_best": val[best] - train[best],
        "gap_last": val[-1] - train[-1],
        "val_rise": (val[-1] - val[best]) / abs(val[best]) if val[best] else 0.0,
        "train_skill": 1 - train[best] / reference[0],
        "val_skill": 1 - val[best] / reference[1],
        "reference_train_loss": reference[0],
        "reference_val_loss": reference[1],
    }
    evidence["skill_gap"] = evidence["train_skill"] - evidence["val_skill"]
    if metric and metric in history and f"val_{metric}" in history:
        for split, key in (("train", metric), ("val", f"val_{metric}")):
            evidence[f"{split}_{metric}_best"] = history[key][best]
            evidence[f"{split}_{metric}_last"] = history[key][-1]

    verdict, reasons = _verdict(train, val, evidence, cfg, generative)
    return {"verdict": verdict, "reasons": "; ".join(reasons), **evidence}


def _verdict(
    train: list[float], val: list[float], e: dict[str, Any], cfg: FitConfig, generative: bool
) -> tuple[str, list[str]]:
    if not all(math.isfinite(v) for v in (*train, *val)):
        return "diverged", ["a loss became NaN or infinite"]
    lowest, reference = min(train), e["reference_train_loss"]
    climb = (train[-1] - lowest) / (reference - lowest) if reference > lowest else 0.0
    # Only a model that had learned (its lowest loss has the skill of a fit) can climb back:
    # one hovering at the constant predictor's loss just wobbles, and is judged underfit.
    learned = 1 - lowest / reference >= cfg.underfit_skill
    if not generative and learned and climb > cfg.diverged_rise:
        return "diverged", [
            f"training loss climbed back {climb:.0%} of the way from its lowest "
            f"{lowest:.3g} to the constant predictor's {reference:.3g} "
            f"(limit {cfg.diverged_rise:.0%})"
        ]
    overfit = []
    # The U-shaped curve: validation loss rises while training loss does not (when both rise,
    # that is optimisation noise, not overfitting).
    kept_fitting = e["train_loss_last"] <= e["train_loss_best"]
    if not generative and kept_fitting and e["val_rise"] >= cfg.overfit_rise:
        overfit.append(
            f"validation loss rose {e['val_rise']:.0%} after its best epoch {e['best_epoch']} "
            f"(limit {cfg.overfit_rise:.0%})"
        )
    if e["skill_gap"] >= cfg.overfit_gap:
        overfit.append(
            f"skill gap {e['skill_gap']:.2f} at the best epoch "
            f"(training {e['train_skill']:.2f}, validation {e['val_skill']:.2f}; "
            f"limit {cfg.overfit_gap:.2f})"
        )
    if overfit:
        return "overfit", overfit
    if not generative and e["train_skill"] < cfg.underfit_skill:
        return "underfit", [
            f"training skill {e['train_skill']:.2f} at the best epoch is below "
            f"{cfg.underfit_skill:.2f}: the model does not even fit its training data"
        ]
    if generative:
        return "good", [
            f"discriminator loss {e['train_loss_last']:.3g} on training and "
            f"{e['val_loss_last']:.3g} on validation images (chance: {GAN_REFERENCE_LOSS:.3g}): "
            "it does not tell them apart"
        ]
    return "good", [
        f"best epoch {e['best_epoch']} of {e['epochs']}: training skill "
        f"{e['train_skill']:.2f}, validation skill {e['val_skill']:.2f}"
    ]


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

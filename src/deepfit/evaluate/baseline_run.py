"""baseline@<dataset>: the classical baselines of a dataset's family, tuned on its validation split.

Writes ``reports/baselines/<dataset>.json`` (each baseline's chosen hyper-parameters, validation
and test scores, and the strongest) and ``models/baselines/<dataset>/predictions.npz`` (each
baseline's test predictions, for the paired tests of evaluate@<run>). No TensorFlow: the Gaussian
mixture baseline of a GAN needs the scorer's features, so evaluate@<run> fits that one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepfit.config import BaselineGrids
from deepfit.evaluate import baselines
from deepfit.outputs import atomic_dir, write_json

if TYPE_CHECKING:
    from deepfit.data import Prepared

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.npz"
# Each family's score for choosing the strongest, and which way is better.
FAMILY_METRIC = {
    "classification": ("accuracy", "higher"),
    "text_classification": ("accuracy", "higher"),
    "forecast": ("rmse", "lower"),
    "regression": ("mse", "lower"),
    "language_model": ("bpc", "lower"),
    "translation": ("exact_match", "higher"),
}


@dataclass(frozen=True)
class BaselineOutputs:
    scores: Path
    predictions_dir: Path

    @classmethod
    def for_dataset(cls, name: str, root: Path = Path()) -> BaselineOutputs:
        return cls(
            scores=root / "reports" / "baselines" / f"{name}.json",
            predictions_dir=root / "models" / "baselines" / name,
        )


def family_of(dataset: Any) -> str:
    """classification, text_classification (raw texts), forecast (a windowed series),
    regression, language_model (a text corpus) or translation: from the dataset's config."""
    if dataset.source == "text":
        return "language_model"
    if dataset.source == "translation":
        return "translation"
    kind, task = dataset.kind_and_task()
    if kind == "text":
        return "text_classification"
    if task == "classification":
        return "classification"
    return "forecast" if dataset.source == "sunspots" else "regression"


def run_baselines(
    name: str, family: str, grids: BaselineGrids, data: Prepared, seed: int, out: BaselineOutputs
) -> dict[str, Any]:
    """Fit every baseline of ``family`` declared in params; write scores and predictions."""
    declared = grids.get(family, {})
    found, predictions = {}, {}
    for baseline, grid in declared.items():
        result = _fit(family, baseline, grid, data, seed)
        predictions[baseline] = np.asarray(result.pop("predictions"))
        found[baseline] = result
        log.info("%s: %s %s", name, baseline, _brief(result, family))
    metric, direction = FAMILY_METRIC[family]
    scores = {
        "family": family,
        "metric": metric,
        "direction": direction,
        "strongest": baselines.strongest(found, direction, metric) if found else None,
        "baselines": found,
    }
    with atomic_dir(out.predictions_dir) as staging:
        np.savez(staging / PREDICTIONS_FILE, **predictions)
        write_json(out.scores, scores)
    return scores


def _fit(family: str, baseline: str, grid: dict, data: Prepared, seed: int) -> dict[str, Any]:
    # The classifier and the regressor of gradient-boosted trees share the name gbt.
    fit = baselines.gbt_regression if (family, baseline) == ("regression", "gbt") else None
    fit = fit or getattr(baselines, baseline)
    if family == "translation":
        return fit(*(texts(data, split) for split in ("train", "val", "test")))
    if family == "language_model":
        vocab = data.spec.n_outputs
        if grid:
            return fit(data.train, data.val, data.test, vocab, grid)
        return fit(data.train, data.val, data.test, vocab)
    if family in ("classification", "text_classification"):
        return fit(data.train, data.val, data.test, grid or {}, seed=seed)
    scale = data.manifest.get("target_scale") or {}
    mean, std = float(scale.get("mean", 0.0)), float(scale.get("std", 1.0))
    if not grid and baseline in ("persistence", "constant"):
        return fit(data.train, data.val, data.test, mean, std)
    return fit(data.train, data.val, data.test, mean, std, grid)


def texts(data: Prepared, split: str) -> tuple[list[str], list[str]]:
    """Source and target texts of a translation dataset's split."""
    from deepfit.data.words import ids_to_text

    x, y = getattr(data, split)
    details = data.manifest["details"]
    return ids_to_text(x, details["source_vocab"]), ids_to_text(y, data.manifest["class_names"])


def _brief(result: dict[str, Any], family: str) -> str:
    metric, _ = FAMILY_METRIC[family]
    return f"{metric} {result[metric]:.4g} (params {result.get('params', {})})"

"""Fit verdicts on hand-made histories, one per verdict, and the gradient-flow summary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepfit.config import FitConfig
from deepfit.evaluate.diagnosis import (
    GAN_REFERENCE_LOSS,
    diagnose,
    gradient_summary,
    mlflow_payload,
    reference_losses,
)

CFG = FitConfig()  # underfit_skill 0.5, overfit_gap 0.1, overfit_rise 0.1, diverged_rise 0.5
REF = (2.0, 2.0)  # constant predictor's loss on training and validation splits


def history(train, val, **more):
    return {"loss": list(train), "val_loss": list(val), **more}


def test_good_fit_judged_at_the_best_epoch_with_its_evidence():
    h = history(
        [1.5, 0.6, 0.3, 0.2, 0.18],
        [1.4, 0.7, 0.35, 0.26, 0.27],
        accuracy=[0.5, 0.8, 0.9, 0.95, 0.96],
        val_accuracy=[0.5, 0.78, 0.88, 0.93, 0.92],
    )
    fit = diagnose(h, CFG, REF, metric="accuracy")
    assert fit["verdict"] == "good"
    assert fit["best_epoch"] == 4 and fit["epochs"] == 5
    assert fit["val_loss_best"] == 0.26 and fit["val_loss_last"] == 0.27
    assert fit["gap_best"] == pytest.approx(0.06) and fit["gap_last"] == pytest.approx(0.09)
    assert fit["val_rise"] == pytest.approx(0.01 / 0.26)
    assert fit["train_skill"] == pytest.approx(0.9) and fit["val_skill"] == pytest.approx(0.87)
    assert fit["skill_gap"] == pytest.approx(0.03)
    assert fit["val_accuracy_best"] == 0.93 and fit["val_accuracy_last"] == 0.92
    assert fit["train_accuracy_best"] == 0.95 and fit["train_accuracy_last"] == 0.96
    assert "best epoch 4 of 5" in fit["reasons"]


def test_validation_loss_rising_after_its_best_epoch_is_overfitting():
    # Training loss keeps falling; validation turns up after epoch 3 (the classic U).
    h = history([1.0, 0.5, 0.3, 0.15, 0.08, 0.04], [1.0, 0.6, 0.4, 0.42, 0.46, 0.5])
    fit = diagnose(h, CFG, REF)
    assert fit["verdict"] == "overfit"
    assert fit["best_epoch"] == 3
    assert fit["val_rise"] == pytest.approx(0.25)
    assert "validation loss rose 25% after its best epoch 3" in fit["reasons"]


def test_large_skill_gap_is_overfitting_even_without_a_rise():
    # Validation loss still falls, but training fits far better than validation does.
    h = history([1.0, 0.2, 0.02], [1.2, 0.7, 0.6])
    fit = diagnose(h, CFG, REF)
    assert fit["verdict"] == "overfit"
    assert fit["skill_gap"] == pytest.approx((1 - 0.02 / 2) - (1 - 0.6 / 2))
    assert "skill gap 0.29" in fit["reasons"]


def test_gap_is_measured_in_skill_so_a_harder_validation_split_is_not_overfitting():
    # Validation loss is 3x training loss, but the constant predictor also does 3x worse there.
    h = history([0.5, 0.2, 0.1], [1.5, 0.6, 0.3])
    fit = diagnose(h, CFG, reference=(1.0, 3.0))
    assert fit["gap_best"] == pytest.approx(0.2)
    assert fit["skill_gap"] == pytest.approx(0.0)
    assert fit["verdict"] == "good"


def test_validation_and_training_loss_rising_together_is_not_overfitting():
    # Both turn up after epoch 3 (a noisy optimiser late in training), no U-shape.
    h = history([1.0, 0.5, 0.3, 0.32, 0.35, 0.36], [1.0, 0.6, 0.4, 0.42, 0.46, 0.5])
    fit = diagnose(h, CFG, REF)
    assert fit["val_rise"] == pytest.approx(0.25)
    assert fit["verdict"] == "good"


def test_a_loss_wobbling_at_the_constant_predictors_is_underfitting_not_divergence():
    # Never better than 0.174 against the constant's 0.178: the climb to 0.185 is a wobble.
    h = history([0.19, 0.174, 0.185], [0.18, 0.167, 0.174])
    fit = diagnose(h, CFG, (0.178, 0.167))
    assert fit["verdict"] == "underfit"


def test_training_loss_near_the_constant_predictor_is_underfitting():
    h = history([2.3, 2.0, 1.8, 1.7], [2.3, 2.0, 1.8, 1.75])
    fit = diagnose(h, CFG, (2.3, 2.3))
    assert fit["verdict"] == "underfit"
    assert fit["train_skill"] == pytest.approx(1 - 1.7 / 2.3)
    assert "below 0.50" in fit["reasons"]


def test_nan_loss_or_a_blown_up_training_loss_is_divergence():
    nan = diagnose(history([1.0, 0.5, math.nan], [1.0, 0.6, math.nan]), CFG, REF)
    assert nan["verdict"] == "diverged" and nan["best_epoch"] == 2
    # Back from 0.3 to 1.5: 1.2 of the 1.7 between the lowest and the constant's 2.0.
    blown = diagnose(history([1.0, 0.3, 1.5], [1.0, 0.4, 1.6]), CFG, REF)
    assert blown["verdict"] == "diverged"
    assert "climbed back 71% of the way from its lowest 0.3" in blown["reasons"]
    # Tripling a tiny loss (dropout noise) is no divergence.
    noisy = diagnose(history([1.0, 0.01, 0.03], [1.0, 0.2, 0.21]), CFG, REF)
    assert noisy["verdict"] != "diverged"


def test_thresholds_come_from_params():
    h = history([1.0, 0.5, 0.3, 0.2], [1.0, 0.6, 0.4, 0.43])  # 7.5% rise
    assert diagnose(h, CFG, REF)["verdict"] == "good"
    strict = FitConfig(overfit_rise=0.05)
    assert diagnose(h, strict, REF)["verdict"] == "overfit"
    lenient = FitConfig(underfit_skill=0.95)
    assert diagnose(h, lenient, REF)["verdict"] == "underfit"


def test_gan_is_judged_on_the_discriminator_without_rise_or_underfit_rules():
    steady = {"d_loss": [1.2, 0.8, 1.3], "val_d_loss": [0.9, 0.5, 1.3]}
    fit = diagnose(steady, CFG, generative=True)
    # Discriminator loss rising and near chance is what a learning generator does: good.
    assert fit["verdict"] == "good"
    assert fit["best_epoch"] == 3  # a GAN keeps its last epoch
    assert fit["reference_train_loss"] == pytest.approx(GAN_REFERENCE_LOSS)
    assert "discriminator loss 1.3 on training and 1.3 on validation images" in fit["reasons"]
    memorising = {"d_loss": [1.2, 0.6, 0.3], "val_d_loss": [1.2, 0.9, 0.9]}
    assert diagnose(memorising, CFG, generative=True)["verdict"] == "overfit"


def test_malformed_history_or_reference_is_refused():
    with pytest.raises(ValueError, match="equally long"):
        diagnose({"loss": [1.0], "val_loss": []}, CFG, REF)
    with pytest.raises(ValueError, match="positive reference"):
        diagnose(history([1.0], [1.0]), CFG, (0.0, 1.0))


def test_reference_losses_are_the_constant_predictor():
    y_train = np.array([0, 0, 1, 1])
    y_val = np.array([0, 1])
    train, val = reference_losses(y_train, y_val, "classification")
    assert train == pytest.approx(math.log(2)) and val == pytest.approx(math.log(2))
    train, val = reference_losses(np.array([1.0, 3.0]), np.array([0.0, 4.0]), "regression")
    assert (train, val) == (pytest.approx(1.0), pytest.approx(4.0))


def test_gradient_summary_names_vanished_and_exploded_layers():
    records = [
        {"h1": 1e-5, "h2": 1e-2, "out": 0.5},
        {"h1": 2e-5, "h2": 2e-2, "out": 0.4},
        {"h1": 3e-5, "h2": 5e3, "out": 0.3},
    ]
    summary = gradient_summary(records, CFG)
    # Medians: h1 2e-5, h2 2e-2, out 0.4; 1% of the largest is 4e-3.
    assert summary["vanished"] == "h1"
    assert summary["exploded"] == "h2"
    assert summary["first_norm_epoch1"] == 1e-5
    assert summary["first_to_last"] == pytest.approx(2e-5 / 0.4)
    assert gradient_summary([], CFG) == {}


def test_gan_networks_are_judged_apart_for_vanishing():
    records = [{"generator/a": 1e-3, "generator/b": 1e-3, "discriminator/c": 10.0}]
    assert gradient_summary(records, CFG)["vanished"] == ""


def test_mlflow_payload_has_sortable_metrics_and_verdict_tags():
    fit = diagnose(history([1.0, 0.5], [1.0, 0.6]), CFG, REF)
    metrics, tags = mlflow_payload(fit, {"vanished": "", "exploded": "", "first_to_last": None})
    assert metrics["fit.best_epoch"] == 2.0 and "fit.skill_gap" in metrics
    assert "fit.verdict" not in metrics and "gradients.first_to_last" not in metrics
    assert tags["deepfit.fit.verdict"] == fit["verdict"]
    assert tags["deepfit.gradients.vanished"] == "none"

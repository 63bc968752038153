"""Fit verdicts: rules on hand-made histories, a labelled set of synthetic and real histories
(100 % agreement, stable under tiny changes), reading history files, and ``deepfit diagnose``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepfit import cli
from deepfit.config import FitConfig
from deepfit.evaluate.diagnosis import (
    GAN_REFERENCE_LOSS,
    VERDICTS,
    HistoryError,
    diagnose,
    gradient_summary,
    mlflow_payload,
    noise,
    read_history,
    reference_losses,
    smooth,
    smoothing_window,
)

CFG = FitConfig()  # the defaults of params.yaml's fit: block
REF = (2.0, 2.0)  # constant predictor's loss on training and validation splits


def history(train, val, **more):
    return {"loss": list(train), "val_loss": list(val), **more}


def test_smoothing_is_a_running_median_whose_window_keeps_its_size_at_the_ends():
    assert smooth([1, 9, 2, 3, 4, 50], 3) == [2, 2, 3, 3, 4, 4]
    assert smooth([5.0, 1.0], 1) == [5.0, 1.0]
    assert [smoothing_window(n, 5) for n in (3, 7, 8, 12, 16, 20, 60)] == [1, 1, 1, 3, 3, 5, 5]


def test_noise_is_the_robust_deviation_of_the_last_half_and_ignores_a_straight_trend():
    rng = np.random.default_rng(0)
    assert noise(list(rng.normal(0, 0.1, 400))) == pytest.approx(0.1, rel=0.15)
    assert noise([1.0 - 0.01 * t for t in range(40)]) == pytest.approx(0.0, abs=1e-12)
    assert noise([1.0, 0.5]) == 0.0


def test_good_fit_judged_at_the_best_smoothed_epoch_with_its_evidence():
    h = history(
        [1.5, 0.6, 0.3, 0.2, 0.18],
        [1.4, 0.7, 0.35, 0.26, 0.27],
        accuracy=[0.5, 0.8, 0.9, 0.95, 0.96],
        val_accuracy=[0.5, 0.78, 0.88, 0.93, 0.92],
    )
    fit = diagnose(h, CFG, REF, metric="accuracy")
    assert fit["verdict"] == "good"
    assert fit["best_epoch"] == 4 and fit["epochs"] == 5 and fit["smoothing"] == 1
    assert fit["val_loss_best"] == 0.26 and fit["val_loss_last"] == 0.27
    assert fit["gap_best"] == pytest.approx(0.06) and fit["gap_last"] == pytest.approx(0.09)
    assert fit["val_rise"] == pytest.approx(0.01 / 0.26)
    assert fit["rise_skill"] == pytest.approx(0.005) and fit["rise_epochs"] == 0
    assert fit["train_skill"] == pytest.approx(0.9) and fit["val_skill"] == pytest.approx(0.87)
    assert fit["skill_gap"] == pytest.approx(0.03)
    assert fit["val_accuracy_best"] == 0.93 and fit["val_accuracy_last"] == 0.92
    assert fit["train_accuracy_best"] == 0.95 and fit["train_accuracy_last"] == 0.96
    assert "best epoch 4 of 5" in fit["reasons"]
    assert "training skill 0.90, validation skill 0.87" in fit["reasons"]


def test_a_lasting_rise_of_validation_loss_after_its_best_epoch_is_overfitting():
    # Training loss keeps falling; validation turns up after epoch 3 for three epochs (the U).
    h = history([1.0, 0.5, 0.3, 0.15, 0.08, 0.04], [1.0, 0.6, 0.4, 0.42, 0.46, 0.5])
    fit = diagnose(h, CFG, REF)
    assert fit["verdict"] == "overfit"
    assert fit["best_epoch"] == 3 and fit["rise_epochs"] == 3
    assert fit["rise_skill"] == pytest.approx(0.05)
    assert "smoothed validation loss rose 0.1 (25%, 0.050 in skill; limit 0.002)" in fit["reasons"]
    assert "from 0.4 at its best epoch 3" in fit["reasons"]
    assert "for the last 3 epochs (limit 3) while training loss kept learning" in fit["reasons"]
    assert fit["gap_widening"] == pytest.approx((0.5 - 0.04) - (0.4 - 0.3))
    assert "the gap widened 0.36, above 3x its noise" in fit["reasons"]


def test_a_rise_that_has_not_lasted_or_is_small_in_skill_is_not_overfitting():
    short = history([1.0, 0.5, 0.3, 0.15, 0.08, 0.04], [1.0, 0.6, 0.4, 0.2, 0.25, 0.35])
    assert diagnose(short, CFG, REF)["rise_epochs"] == 1
    assert diagnose(short, CFG, REF)["verdict"] == "good"
    small = history([1.0, 0.5, 0.3, 0.15, 0.08, 0.04], [1.0, 0.6, 0.4, 0.401, 0.402, 0.403])
    assert diagnose(small, CFG, REF)["rise_epochs"] == 3
    assert diagnose(small, CFG, REF)["rise_skill"] == pytest.approx(0.0015)
    assert diagnose(small, CFG, REF)["verdict"] == "good"


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


def test_the_training_curve_is_the_one_scored_as_validation_is():
    # A tuning trial of the default fnn (batch norm, dropout 0.5) after 8 epochs: Keras' running
    # training loss is far below val_loss, but the training rows scored in inference mode, as
    # validation is, match it (the moving statistics lag). No gap in generalisation.
    keras_loss = [1.546, 0.439, 0.275, 0.241, 0.188, 0.165, 0.147, 0.135]
    val = [1.658, 1.345, 1.138, 0.957, 0.813, 0.681, 0.569, 0.461]
    scored = [1.658, 1.349, 1.142, 0.954, 0.807, 0.666, 0.549, 0.435]
    reference = (2.3, 2.3)
    h = history(keras_loss, val, train_eval_loss=scored, accuracy=[0.9] * 8)
    h.update(val_accuracy=[0.97] * 8, train_eval_accuracy=[0.98] * 8)
    fit = diagnose(h, CFG, reference, metric="accuracy")
    assert fit["train_curve"] == "train_eval_loss" and fit["verdict"] == "good"
    assert fit["train_loss_last"] == 0.435 and fit["train_accuracy_last"] == 0.98
    assert fit["skill_gap"] == pytest.approx((1 - 0.435 / 2.3) - (1 - 0.461 / 2.3))
    # Judged on Keras' running loss alone (a CSVLogger file), the same run looks overfit.
    alone = diagnose(history(keras_loss, val), CFG, reference)
    assert alone["train_curve"] == "loss" and alone["verdict"] == "overfit"
    # A scored curve missing epochs (a run resumed from an older backup) is not used.
    partial = diagnose(history(keras_loss, val, train_eval_loss=scored[3:]), CFG, reference)
    assert partial["train_curve"] == "loss"


def test_validation_and_training_loss_rising_together_is_not_overfitting():
    # Both turn up after epoch 3 (a noisy optimiser late in training), no U-shape.
    h = history([1.0, 0.5, 0.3, 0.32, 0.35, 0.38], [1.0, 0.6, 0.4, 0.42, 0.46, 0.5])
    fit = diagnose(h, CFG, REF)
    assert fit["rise_epochs"] == 3 and fit["train_rise"] == pytest.approx(0.08)
    assert fit["verdict"] == "good"


def test_a_rise_that_training_loss_shares_is_not_overfitting():
    # The seed-8 lstm: validation rose 3x its noise for 3 epochs, and training loss rose less
    # than 3x its own noise, but the gap between them did not widen beyond its noise.
    case = next(c for c in real() if c[0] == "lstm_seed8")
    fit = judge(case)
    assert fit["rise_epochs"] >= CFG.min_rise_epochs
    assert fit["rise_skill"] >= CFG.overfit_rise_skill
    assert 0 < fit["train_rise"] <= CFG.noise_multiple * fit["train_noise"]
    assert fit["gap_widening"] < CFG.noise_multiple * fit["gap_noise"]
    assert fit["gap_noise"] == pytest.approx(math.hypot(fit["val_noise"], fit["train_noise"]))
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
    assert nan["verdict"] == "diverged" and nan["best_epoch"] == 2 and nan["epochs"] == 3
    assert nan["reasons"] == "a loss became NaN or infinite at epoch 3"
    # Back from 0.3 to 1.5: 1.2 of the 1.7 between the lowest and the constant's 2.0.
    blown = diagnose(history([1.0, 0.3, 1.5], [1.0, 0.4, 1.6]), CFG, REF)
    assert blown["verdict"] == "diverged"
    assert "climbed back 71% of the way from its lowest 0.3" in blown["reasons"]
    # Tripling a tiny loss (dropout noise) is no divergence.
    noisy = diagnose(history([1.0, 0.01, 0.03], [1.0, 0.2, 0.21]), CFG, REF)
    assert noisy["verdict"] != "diverged"
    first = diagnose(history([math.nan, 1.0], [1.0, 1.0]), CFG, REF)
    assert first["verdict"] == "diverged" and first["epochs"] == 2


def test_thresholds_come_from_params():
    h = history([1.0, 0.5, 0.3, 0.2, 0.15, 0.1], [1.0, 0.6, 0.4, 0.401, 0.402, 0.403])
    assert diagnose(h, CFG, REF)["verdict"] == "good"  # rise 0.0015 in skill
    assert diagnose(h, FitConfig(overfit_rise_skill=0.001), REF)["verdict"] == "overfit"
    assert diagnose(h, FitConfig(underfit_skill=0.97), REF)["verdict"] == "underfit"
    lasting = history([1.0, 0.5, 0.3, 0.15, 0.08, 0.04], [1.0, 0.6, 0.4, 0.2, 0.25, 0.35])
    assert diagnose(lasting, FitConfig(min_rise_epochs=1), REF)["verdict"] == "overfit"
    assert diagnose(lasting, FitConfig(noise_multiple=1e9), REF)["rise_epochs"] == 0


def test_without_a_reference_only_the_curves_are_judged():
    u_shape = history([1.0, 0.5, 0.3, 0.15, 0.08, 0.04], [1.0, 0.6, 0.4, 0.42, 0.46, 0.5])
    fit = diagnose(u_shape, CFG)
    assert fit["verdict"] == "overfit" and fit["train_skill"] is None
    assert fit["reasons"].endswith(
        "skill rules (climb back, rise in skill, skill gap, underfit) skipped"
    )
    flat = diagnose(history([2.3, 2.3, 2.3], [2.3, 2.3, 2.3]), CFG)
    assert flat["verdict"] == "good" and "no reference loss" in flat["reasons"]


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


def test_fit_config_wants_an_odd_smoothing_window():
    with pytest.raises(ValueError, match="smoothing must be an odd number of epochs, not 4"):
        FitConfig(smoothing=4)


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


# --- The labelled set: histories an expert has read, with the verdict they would give ---------

HISTORIES = Path(__file__).parent / "data" / "histories"
CLS = (2.3, 2.3)  # ln 10: ten balanced classes


def curve(epochs, floor, start, tau, noise, seed, rise_from=None, rise_per_epoch=0.0):
    """A seeded learning curve: exponential decay to ``floor`` plus Gaussian noise, optionally
    rising linearly from epoch ``rise_from`` (0-based) on."""
    t = np.arange(epochs)
    values = floor + (start - floor) * np.exp(-t / tau)
    if rise_from is not None:
        values = values + rise_per_epoch * np.maximum(t - rise_from, 0)
    values = values + np.random.default_rng(seed).normal(0, noise, epochs)
    return [float(v) for v in np.maximum(values, 1e-4)]


def _with(values, index, value):
    values = list(values)
    values[index] = value
    return values


def synthetic():
    """(name, label, history, reference, generative) for each hand-made case."""
    good_train = curve(60, 0.05, 2.3, 5, 0.004, 1)
    good_val = curve(60, 0.08, 2.3, 5, 0.008, 2)
    return [
        ("noisy_good", "good", history(good_train, good_val), CLS, False),
        # The cnn case: the last two epochs rise 11 % on a loss 40 times below the constant's.
        (
            "last_two_epochs_rise",
            "good",
            history(good_train, [*good_val[:-2], 0.0446, 0.0501]),
            CLS,
            False,
        ),
        ("late_single_spike", "good", history(good_train, _with(good_val, -1, 0.3)), CLS, False),
        ("late_training_spike", "good", history(_with(good_train, -1, 0.6), good_val), CLS, False),
        ("mid_spike", "good", history(good_train, _with(good_val, 30, 0.5)), CLS, False),
        # The rnn case: 30 validation years, a loss wobbling around 0.5 while training is flat.
        (
            "wobbling_plateau",
            "good",
            history(curve(20, 0.13, 0.5, 2, 0.006, 3), curve(20, 0.5, 0.7, 2, 0.03, 4)),
            (1.0, 3.3),
            False,
        ),
        (
            "still_improving",
            "good",
            history(curve(8, 0.3, 2.3, 3, 0.01, 5), curve(8, 0.35, 2.3, 3, 0.01, 6)),
            CLS,
            False,
        ),
        (
            "harder_validation_split",
            "good",
            history(curve(30, 0.1, 1.0, 4, 0.005, 7), curve(30, 0.3, 3.0, 4, 0.015, 8)),
            (1.0, 3.0),
            False,
        ),
        (
            "tiny_drift",
            "good",
            history(good_train, curve(60, 0.08, 2.3, 5, 0.008, 2, 20, 0.0002)),
            CLS,
            False,
        ),
        (
            "u_shaped",
            "overfit",
            history(
                curve(50, 0.005, 2.3, 4, 0.002, 9), curve(50, 0.25, 2.3, 4, 0.01, 10, 15, 0.02)
            ),
            CLS,
            False,
        ),
        (
            "noisy_u_shaped",
            "overfit",
            history(
                curve(50, 0.005, 2.3, 4, 0.002, 11), curve(50, 0.3, 2.3, 4, 0.05, 12, 15, 0.02)
            ),
            CLS,
            False,
        ),
        (
            "slow_drift",
            "overfit",
            history(good_train, curve(60, 0.08, 2.3, 5, 0.008, 2, 20, 0.003)),
            CLS,
            False,
        ),
        (
            "big_skill_gap",
            "overfit",
            history(curve(40, 0.01, 2.3, 4, 0.002, 13), curve(40, 0.9, 2.3, 4, 0.01, 14)),
            CLS,
            False,
        ),
        (
            "flat_near_constant",
            "underfit",
            history(curve(30, 2.1, 2.3, 3, 0.01, 15), curve(30, 2.12, 2.3, 3, 0.01, 16)),
            CLS,
            False,
        ),
        (
            "slow_learner",
            "underfit",
            history(curve(30, 1.2, 2.3, 20, 0.01, 17), curve(30, 1.25, 2.3, 20, 0.01, 18)),
            CLS,
            False,
        ),
        (
            "wobbling_at_constant",
            "underfit",
            history(curve(15, 0.175, 0.2, 2, 0.004, 19), curve(15, 0.17, 0.2, 2, 0.004, 20)),
            (0.178, 0.167),
            False,
        ),
        ("nan", "diverged", history(_with(good_train, 40, math.nan), good_val), CLS, False),
        (
            "infinite_validation",
            "diverged",
            history(good_train, _with(good_val, 10, math.inf)),
            CLS,
            False,
        ),
        (
            "climbing_back",
            "diverged",
            history(
                curve(20, 0.1, 2.3, 3, 0.005, 21) + curve(20, 2.0, 0.3, 4, 0.02, 22),
                curve(20, 0.15, 2.3, 3, 0.01, 23) + curve(20, 2.1, 0.4, 4, 0.02, 24),
            ),
            CLS,
            False,
        ),
        (
            "gan_near_chance",
            "good",
            {
                "d_loss": curve(40, 1.28, 0.8, 8, 0.015, 25),
                "val_d_loss": curve(40, 1.24, 0.5, 8, 0.015, 26),
            },
            None,
            True,
        ),
        (
            "gan_memorising",
            "overfit",
            {
                "d_loss": curve(40, 0.3, 1.3, 8, 0.015, 27),
                "val_d_loss": curve(40, 1.0, 1.3, 8, 0.015, 28),
            },
            None,
            True,
        ),
        (
            "gan_nan",
            "diverged",
            {
                "d_loss": _with(curve(20, 1.2, 0.8, 5, 0.02, 29), 12, math.nan),
                "val_d_loss": curve(20, 1.2, 0.8, 5, 0.02, 30),
            },
            None,
            True,
        ),
    ]


# Real histories of a pipeline run with the default params (tests/data/histories/README.md).
REAL = [
    ("fnn", "good"),  # val loss still falling at 30 epochs; skill 0.98 / 0.96
    ("cnn", "good"),  # training and validation curves on top of each other (skill 0.98 / 0.98)
    ("rnn", "good"),  # training flat, validation wobbling around 0.5 (skill 0.87 / 0.85)
    ("lstm", "good"),  # validation noisy but no lasting rise (skill 0.87 / 0.90)
    # Seed 8: a lucky low of 0.244 at epoch 9, then validation noisy around 0.33 with a spike
    # of 0.50 near the end, while training loss also drifts up 10 %: nothing widens.
    ("lstm_seed8", "good"),
    ("rnn_adding", "underfit"),  # never beats the constant predictor (skill -0.01)
    ("lstm_adding", "good"),  # solves the task (skill 0.99); one late spike in val loss
    ("gan", "good"),  # discriminator 1.29 / 1.24 against chance 1.39, no gap
    ("capacity_width_1", "underfit"),
    ("capacity_width_1024", "overfit"),
    ("regularisation_none", "overfit"),
    ("regularisation_l2", "good"),
    ("activation_sigmoid", "underfit"),
]


def real():
    cases = []
    for name, label in REAL:
        fixture = json.loads((HISTORIES / f"{name}.json").read_text())
        reference = tuple(fixture["reference"]) if fixture["reference"] else None
        cases.append((name, label, fixture["history"], reference, fixture["generative"]))
    return cases


LABELLED = synthetic() + real()


def judge(case, history_=None):
    _, _, h, reference, generative = case
    return diagnose(history_ or h, CFG, reference, generative)


@pytest.mark.parametrize("case", LABELLED, ids=[c[0] for c in LABELLED])
def test_labelled_histories_get_the_experts_verdict(case):
    fit = judge(case)
    assert fit["verdict"] == case[1], fit["reasons"]


def test_labelled_set_is_large_and_covers_every_verdict():
    assert len(LABELLED) >= 20
    assert {c[1] for c in LABELLED} == set(VERDICTS)


@pytest.mark.parametrize("case", LABELLED, ids=[c[0] for c in LABELLED])
def test_no_verdict_flips_when_one_loss_moves_by_one_percent_of_its_noise(case):
    _, label, h, _, generative = case
    monitor = "d_loss" if generative else "loss"
    for key in (monitor, f"val_{monitor}"):
        step = 0.01 * noise([v for v in h[key] if math.isfinite(v)])
        for i in range(len(h[key])):
            for sign in (1, -1):
                moved = {**h, key: _with(h[key], i, h[key][i] + sign * step)}
                assert judge(case, moved)["verdict"] == label, (key, i, sign)


# --- Reading history files and `deepfit diagnose` ---------------------------------------------

CSV_GOOD = "epoch,accuracy,loss,val_accuracy,val_loss\n" + "".join(
    f"{i},{0.5 + 0.04 * i},{2.0 / (i + 1)},{0.5 + 0.04 * i},{2.1 / (i + 1)}\n" for i in range(10)
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_history_reads_a_csvlogger_file_and_a_history_json(tmp_path):
    from_csv = read_history(write(tmp_path, "log.csv", CSV_GOOD))
    assert list(from_csv) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert from_csv["loss"][:2] == [2.0, 1.0] and len(from_csv["val_loss"]) == 10
    from_json = read_history(write(tmp_path, "h.json", json.dumps(from_csv)))
    assert from_json == from_csv
    diverged = read_history(write(tmp_path, "nan.csv", "epoch,loss,val_loss\n0,1.0,nan\n"))
    assert math.isnan(diverged["val_loss"][0])  # a NaN loss is evidence, not a broken file
    gan = read_history(write(tmp_path, "gan.json", '{"d_loss": [1.0], "val_d_loss": [1.1]}'))
    assert gan == {"d_loss": [1.0], "val_d_loss": [1.1]}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.csv", "", "empty file"),
        ("blank.json", "  \n", "empty file"),
        ("header.csv", "epoch,loss,val_loss\n", "no epochs (header only)"),
        ("noval.csv", "epoch,loss\n0,1.0\n", "no 'val_loss' column (found: loss)"),
        ("noloss.json", '{"val_loss": [1.0]}', "no 'loss' key (found: val_loss)"),
        (
            "cell.csv",
            "epoch,loss,val_loss\n0,1.0,0.9\n1,0.5,abc\n",
            "line 3, column 'val_loss': 'abc' is no number",
        ),
        (
            "blankcell.csv",
            "epoch,loss,val_loss\n0,,0.9\n",
            "line 2, column 'loss': '' is no number",
        ),
        ("short.csv", "epoch,loss,val_loss\n0,1.0\n", "line 2 has 2 cells, the header 3"),
        (
            "prose.txt",
            "hello world\n",
            "not a CSV history (line 1 is no header like epoch,loss,...)",
        ),
        ("bad.json", '{"loss": [1.0,', "not valid JSON (line 1: Expecting value)"),
        ("list.json", "[1, 2]", 'expected a JSON object like {"loss": [...], ...}'),
        (
            "null.json",
            '{"loss": [1.0, null], "val_loss": [1.0, 1.0]}',
            "key 'loss', epoch 2: None is no number",
        ),
        (
            "scalar.json",
            '{"loss": 1.0, "val_loss": [1.0]}',
            "key 'loss' is not a list of per-epoch values",
        ),
        ("nolists.json", '{"loss": [], "val_loss": []}', "no epochs"),
        (
            "uneven.json",
            '{"loss": [1.0], "val_loss": [1.0, 2.0]}',
            "keys have different numbers of epochs (loss 1, val_loss 2)",
        ),
    ],
)
def test_bad_history_files_are_one_line_errors_naming_the_file(tmp_path, name, text, message):
    path = write(tmp_path, name, text)
    with pytest.raises(HistoryError) as caught:
        read_history(path)
    assert str(caught.value) == f"{path}: {message}"


def test_a_missing_or_binary_history_file_is_named(tmp_path):
    with pytest.raises(HistoryError, match=r"nope\.csv: no such file$"):
        read_history(tmp_path / "nope.csv")
    binary = tmp_path / "model.keras"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00")
    with pytest.raises(
        HistoryError, match=r"model\.keras: not a text file \(expected CSV or JSON\)$"
    ):
        read_history(binary)
    with pytest.raises(HistoryError, match=r": is a directory, not a history file$"):
        read_history(tmp_path)


def run_cli(capsys, *args):
    # --params points nowhere, so the thresholds are FitConfig's defaults.
    code = cli.main(["--params", "no-such-params.yaml", "diagnose", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_diagnose_prints_the_verdict_and_its_evidence(tmp_path, capsys):
    path = write(tmp_path, "log.csv", CSV_GOOD)
    code, out, err = run_cli(capsys, path, "--classes", 10)
    assert code == 0 and err == ""
    assert out.startswith(f"{path}: good\nreasons: best epoch 10 of 10")
    assert "  train_skill: 0.9" in out and "  reference_train_loss: 2.303" in out
    code, out, _ = run_cli(capsys, path, "--reference-loss", 2.0, "--json")
    fit = json.loads(out)
    assert code == 0 and fit["verdict"] == "good" and fit["reference_val_loss"] == 2.0
    code, out, _ = run_cli(capsys, path, "--json")
    fit = json.loads(out)
    assert fit["train_skill"] is None and "no reference loss" in fit["reasons"]


def test_cli_diagnose_judges_a_real_history_json_and_writes_the_figure(tmp_path, capsys):
    fixture = json.loads((HISTORIES / "regularisation_none.json").read_text())
    path = write(tmp_path, "history.json", json.dumps(fixture["history"]))
    figure = tmp_path / "curves.png"
    code, out, _ = run_cli(capsys, path, "--classes", 10, "--figure", figure)
    assert code == 0 and out.startswith(f"{path}: overfit\n")
    assert f"wrote {figure}" in out and figure.stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv"], "{tmp}/missing.csv: no such file"),
        (["empty.csv"], "{tmp}/empty.csv: empty file"),
        (["log.csv", "--classes", "1"], "--classes: expected at least 2 classes, not 1"),
        (
            ["log.csv", "--reference-loss", "0"],
            "--reference-loss: expected a positive loss, not 0.0",
        ),
        (
            ["log.csv", "--classes", "3", "--reference-loss", "1"],
            "argument --reference-loss: not allowed with argument --classes",
        ),
        (["log.csv", "--classes", "ten"], "argument --classes: invalid int value: 'ten'"),
        ([], "the following arguments are required: PATH"),
    ],
)
def test_cli_diagnose_errors_are_one_line_with_exit_status_2(tmp_path, capsys, args, message):
    write(tmp_path, "log.csv", CSV_GOOD)
    write(tmp_path, "empty.csv", "")
    args = [str(tmp_path / a) if a.endswith(".csv") else a for a in args]
    with pytest.raises(SystemExit) as exited:
        run_cli(capsys, *args)
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert err == f"deepfit diagnose: error: {message.format(tmp=tmp_path)}\n"


def test_cli_help_does_not_import_tensorflow_mlflow_or_matplotlib():
    code = (
        "import contextlib, io, sys\n"
        "from deepfit import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    cli.main(['diagnose', '--help'])\n"
        "heavy = {'tensorflow', 'keras', 'mlflow', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cli_diagnose_into_a_closed_pipe_writes_the_figure_and_stops_quietly(tmp_path):
    # `deepfit diagnose ... | head`: here the reader is gone before the first line is printed
    path = write(tmp_path, "log.csv", CSV_GOOD)
    figure = tmp_path / "fit.png"
    cmd = [sys.executable, "-m", "deepfit.cli", "diagnose", str(path), "--figure", str(figure)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        status = proc.wait(timeout=120)
    assert figure.stat().st_size > 0
    assert stderr == ""
    assert status == 1

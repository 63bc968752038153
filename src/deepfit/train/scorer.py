"""train_scorer: the fixed feature classifier that scores GAN samples, trained in its own stage.

Its architecture is fixed here and its seed and epochs live under ``scorer:`` in params, so GAN
scores stay comparable while the user varies the CNN run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfit.config import ScorerConfig
from deepfit.models import get_spec
from deepfit.outputs import MODEL_FILE, atomic_dir, write_json

if TYPE_CHECKING:
    from deepfit.data import Prepared

log = logging.getLogger(__name__)

SCORER_ARCH = {"filters": [32, 64], "kernel_size": 3, "dense": [64], "dropout": 0.3}


def train_scorer(cfg: ScorerConfig, data: Prepared, out_dir: Path) -> dict[str, Any]:
    """Train the scorer CNN and write ``model.keras`` and ``scorer.json`` (its test accuracy)."""
    import keras
    import numpy as np

    from deepfit.train.callbacks import EpochProgress
    from deepfit.train.loop import build_training_state, input_pipeline

    spec = get_spec("cnn")
    keras.utils.set_random_seed(cfg.seed)
    model = spec.build(spec.config.model_validate(SCORER_ARCH), data.spec)
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=cfg.steps_per_execution,
    )
    build_training_state(model, generative=False)  # one trace of the training step, not two
    stop = keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True)
    train, val = input_pipeline(data, cfg.batch_size, cfg.seed, generative=False)
    model.fit(
        train,
        validation_data=val,
        epochs=cfg.epochs,
        shuffle=False,  # the training dataset reshuffles itself every epoch
        callbacks=[stop, EpochProgress()],
        verbose=0,
    )
    x_test, y_test = data.test
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test))
    info = {"test_accuracy": accuracy, "feature_dim": int(model.layers[-1].input.shape[-1])}
    with atomic_dir(out_dir) as staging:
        model.save(staging / MODEL_FILE)
        write_json(staging / "scorer.json", info)
    log.info("scorer test accuracy %.4f", accuracy)
    return info

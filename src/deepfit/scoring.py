"""The fixed feature classifier that scores GAN samples, trained in its own stage.

Its architecture is fixed here and its seed and epochs live under ``scorer:`` in params, so GAN
scores stay comparable while the user varies the CNN run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfit.config import ScorerConfig
from deepfit.models import get_spec, load_model
from deepfit.outputs import atomic_dir, write_json

if TYPE_CHECKING:
    import keras
    import numpy as np

    from deepfit.data import Prepared

log = logging.getLogger(__name__)

SCORER_ARCH = {"filters": [32, 64], "kernel_size": 3, "dense": [64], "dropout": 0.3}
MODEL_FILE = "model.keras"


def train_scorer(cfg: ScorerConfig, data: Prepared, out_dir: Path) -> dict[str, Any]:
    """Train the scorer CNN and write ``model.keras`` and ``scorer.json`` (its test accuracy)."""
    import keras
    import numpy as np

    from deepfit.callbacks import EpochProgress
    from deepfit.training import input_pipeline

    spec = get_spec("cnn")
    keras.utils.set_random_seed(cfg.seed)
    model = spec.build(spec.config.model_validate(SCORER_ARCH), data.spec)
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=cfg.steps_per_execution,
    )
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


class Scorer:
    """Features (the input of the scorer's output layer) and class predictions for images."""

    def __init__(self, model_dir: Path) -> None:
        import keras

        self.model: keras.Model = load_model(model_dir / MODEL_FILE, "cnn")
        self.features_model = keras.Model(self.model.inputs, self.model.layers[-1].input)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.features_model.predict(images, batch_size=256, verbose=0)

    def classes(self, images: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.argmax(self.model.predict(images, batch_size=256, verbose=0), axis=1)

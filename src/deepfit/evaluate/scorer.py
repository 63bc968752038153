"""The GAN scorer's view of images: features (the input of its output layer) and classes.

``deepfit.train.scorer`` trains it in its own stage; evaluation loads it from models/_scorer/.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deepfit.models import load_model
from deepfit.outputs import MODEL_FILE

if TYPE_CHECKING:
    import keras
    import numpy as np


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

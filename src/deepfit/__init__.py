"""deepfit: declarative deep-learning experiments (params.yaml -> DVC -> Keras 3 -> MLflow)."""

import os

# Set once, before anything imports Keras: the TensorFlow backend, and TensorFlow's C++ info
# chatter off so DVC logs show one line per epoch.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

"""Text from a character language model: a fixed prompt continued at several temperatures.

All temperatures are sampled together, one batch row each, from one seeded generator; the
context is the prompt plus what was generated, cut to the last ``window`` characters (the
length the model was trained on).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

    from deepfit.config import TextSamplesConfig

UNKNOWN_ID = 0  # deepfit.data.text's unknown token: never sampled


def next_token_function(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """Probabilities of the next id after each row of a (B, t) id batch, compiled once for
    every context length."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)], reduce_retracing=True)
    def step(ids: tf.Tensor) -> tf.Tensor:
        return model(ids, training=False)[:, -1, :]

    return lambda ids: step(tf.constant(ids, dtype=tf.int32)).numpy()


def sample_text(
    model: keras.Model,
    vocab: Sequence[str],
    cfg: TextSamplesConfig,
    window: int,
    seed: int,
) -> list[str]:
    """One continuation of ``cfg.prompt`` per temperature (``cfg.length`` characters each)."""
    index = {char: i for i, char in enumerate(vocab)}
    prompt = [index.get(c, UNKNOWN_ID) for c in cfg.prompt]
    temperatures = np.asarray(cfg.temperatures, dtype=np.float64)[:, None]
    context = np.tile(np.asarray(prompt, dtype=np.int32), (len(temperatures), 1))
    predict, rng = next_token_function(model), np.random.default_rng(seed)
    drawn = []
    for _ in range(cfg.length):
        proba = predict(context[:, -window:]).astype(np.float64)
        proba[:, UNKNOWN_ID] = 0.0
        logits = np.log(np.maximum(proba, 1e-30)) / temperatures
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        ids = np.array([rng.choice(len(row), p=row) for row in weights], dtype=np.int32)
        drawn.append(ids)
        context = np.concatenate([context, ids[:, None]], axis=1)
    return ["".join(vocab[i] for i in row) for row in np.stack(drawn, axis=1)]


def samples_text(texts: Sequence[str], cfg: TextSamplesConfig, title: str) -> str:
    """The samples as one plain-text document: the prompt, then one section per temperature."""
    parts = [f"{title}\nprompt: {cfg.prompt!r}\n"]
    for temperature, text in zip(cfg.temperatures, texts, strict=True):
        parts.append(f"--- temperature {temperature:g} ---\n{cfg.prompt}{text}\n")
    return "\n".join(parts)

"""The encoder-decoder as a Keras model: teacher forcing in ``fit``, greedy decoding in ``call``.

``train_step`` and ``test_step`` feed the decoder the true previous target token (teacher
forcing): the start token, then the target shifted right by one. ``call(source)`` (so
``predict``) decodes greedily, each step reading the token the model itself chose. Registered
for serialization as ``deepfit>Seq2Seq``. Imports Keras: ``deepfit.models.seq2seq`` imports it
only when a model is built or loaded.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

START_ID = 1  # deepfit.data.translation's start token


@keras.saving.register_keras_serializable(package="deepfit", name="Seq2Seq")
class Seq2Seq(keras.Model):
    """LSTM encoder and decoder over embedded tokens; optional dot-product (Luong) attention
    of each decoder step over the encoder's outputs."""

    def __init__(
        self,
        source_vocab: int,
        target_vocab: int,
        target_length: int,
        embedding: int = 64,
        units: int = 128,
        attention: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_vocab, self.target_vocab = source_vocab, target_vocab
        self.target_length, self.embedding_dim = target_length, embedding
        self.units, self.use_attention = units, attention
        self.source_embedding = layers.Embedding(source_vocab, embedding, name="source_embedding")
        self.encoder = layers.LSTM(units, return_sequences=True, return_state=True, name="encoder")
        self.target_embedding = layers.Embedding(target_vocab, embedding, name="target_embedding")
        self.decoder = layers.LSTM(units, return_sequences=True, return_state=True, name="decoder")
        self.attention = layers.Attention(name="attention") if attention else None
        self.output_layer = layers.Dense(target_vocab, activation="softmax", name="output")

    def build(self, input_shape: Any) -> None:
        source = ops.zeros((1, input_shape[1] or 1), dtype="int32")
        target = ops.zeros((1, self.target_length), dtype="int32")
        self.teacher_forced(source, target)
        self.built = True

    def encode(self, source: Any, training: bool = False) -> tuple[Any, list[Any]]:
        """The encoder's outputs at every source position and its final state."""
        memory, h, c = self.encoder(self.source_embedding(source), training=training)
        return memory, [h, c]

    def decode(
        self, tokens: Any, memory: Any, state: list[Any], training: bool = False
    ) -> tuple[Any, list[Any]]:
        """Next-token probabilities after each of ``tokens`` (B, t), and the decoder state."""
        out, h, c = self.decoder(
            self.target_embedding(tokens), initial_state=state, training=training
        )
        if self.attention is not None:
            out = ops.concatenate([out, self.attention([out, memory])], axis=-1)
        return self.output_layer(out), [h, c]

    def teacher_forced(self, source: Any, target: Any, training: bool = False) -> Any:
        """Probabilities (B, T, V) when the decoder reads the true previous target tokens."""
        start = ops.full((ops.shape(target)[0], 1), START_ID, dtype="int32")
        previous = ops.concatenate([start, ops.cast(target[:, :-1], "int32")], axis=1)
        memory, state = self.encode(source, training)
        return self.decode(previous, memory, state, training)[0]

    def call(self, source: Any, training: bool = False) -> Any:
        """Greedy decoding: probabilities (B, T, V) of each step, fed its own best token.

        Each step runs the decoder's LSTM cell once, with the layer's own weights (a step of
        the LSTM layer would be a loop of its own).
        """
        memory, state = self.encode(source, training)
        token = ops.full((ops.shape(source)[0],), START_ID, dtype="int32")
        steps = []
        for _ in range(self.target_length):
            out, state = self.decoder.cell(self.target_embedding(token), state, training=training)
            out = out[:, None, :]
            if self.attention is not None:
                out = ops.concatenate([out, self.attention([out, memory])], axis=-1)
            proba = self.output_layer(out)
            steps.append(proba)
            token = ops.cast(ops.argmax(proba[:, 0, :], axis=-1), "int32")
        return ops.concatenate(steps, axis=1)

    def train_step(self, data: Any) -> dict[str, Any]:
        import tensorflow as tf  # GradientTape: training runs on the TensorFlow backend

        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            proba = self.teacher_forced(x, y, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=proba, training=True)
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        return self.compute_metrics(x, y, proba)

    def test_step(self, data: Any) -> dict[str, Any]:
        import tensorflow as tf

        x, y = data[0], data[1]
        proba = self.teacher_forced(x, y)
        loss = self.compute_loss(x=x, y=y, y_pred=proba, training=False)
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        return self.compute_metrics(x, y, proba)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "source_vocab": self.source_vocab,
            "target_vocab": self.target_vocab,
            "target_length": self.target_length,
            "embedding": self.embedding_dim,
            "units": self.units,
            "attention": self.use_attention,
        }

"""Layer blocks every architecture shares: weight penalty, dense stacks, conv blocks, recurrent
stacks and the task's output head.

Keras is imported inside each block, so architecture modules import this one at no cost while
params.yaml is validated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from deepfit.models.base import (
    ActivationSpec,
    ArchConfig,
    DataSpec,
    DropoutRate,
    L2Factor,
    OptionalWidths,
    PositiveInt,
    Widths,
    check_per_layer,
    per_layer,
)

if TYPE_CHECKING:
    import keras

Cell = Literal["SimpleRNN", "LSTM"]


def input_layers(data: DataSpec) -> tuple[Any, Any]:
    """The model's input, and the tensor the first layer reads: raw uint8 pixels are rescaled
    inside the model (``data.input_scale``), so the saved model takes the user's pixel values;
    a text is one raw string (``text_vectorizer`` reads it)."""
    import keras
    from keras import layers

    if data.kind == "tokens":
        # Any length: the model is trained on windows and samples text from shorter prompts.
        inputs = keras.Input(shape=(None,), dtype="int32", name="inputs")
    elif data.kind == "text":
        inputs = keras.Input(shape=(), dtype="string", name="inputs")
    else:
        inputs = keras.Input(shape=data.input_shape, name="inputs")
    if data.input_scale is None:
        return inputs, inputs
    return inputs, layers.Rescaling(data.input_scale, name="rescale")(inputs)


def token_embedding(x: Any, data: DataSpec, dim: int) -> Any:
    """Integer ids (``data.n_outputs`` symbols, the vocabulary) to ``dim``-wide vectors."""
    from keras import layers

    return layers.Embedding(data.n_outputs, dim, name="embedding")(x)


def text_vectorizer(data: DataSpec, output_mode: Literal["multi_hot", "int"]) -> Any:
    """Keras' TextVectorization with the dataset's vocabulary (fitted on its training split):
    raw strings to a multi-hot bag of words (one slot per word, and one shared by unknown
    words), or to ``data.sequence_length`` word ids (0 pads, 1 is an unknown word)."""
    from keras import layers

    if data.vocabulary is None:
        raise ValueError("a text model needs the dataset's vocabulary (vocabulary.json)")
    options = {"output_sequence_length": data.sequence_length} if output_mode == "int" else {}
    return layers.TextVectorization(
        vocabulary=list(data.vocabulary), output_mode=output_mode, name="vectorize", **options
    )


def kernel_regularizer(l2: float) -> keras.regularizers.Regularizer | None:
    """An L2 weight penalty, or none when the factor is 0 (keeps the loss free of a 0 term)."""
    import keras

    return keras.regularizers.L2(l2) if l2 > 0 else None


def dense_stack(
    x: Any,
    units: list[int],
    activations: list[str],
    *,
    dropout: float,
    l2: float,
    batch_norm: bool,
    prefix: str = "dense",
) -> Any:
    """Dense -> (batch norm) -> activation -> (dropout), once per width in ``units``."""
    from keras import layers

    for i, (width, activation) in enumerate(zip(units, activations, strict=True), start=1):
        # The batch-norm shift makes a bias redundant.
        x = layers.Dense(
            width,
            use_bias=not batch_norm,
            kernel_regularizer=kernel_regularizer(l2),
            name=f"{prefix}_{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{prefix}_{i}_bn")(x)
        x = layers.Activation(activation, name=f"{prefix}_{i}_{activation}")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"{prefix}_{i}_dropout")(x)
    return x


def conv_block(
    x: Any,
    filters: int,
    activation: str,
    *,
    kernel_size: int,
    l2: float,
    batch_norm: bool,
    index: int,
    pool: bool,
) -> Any:
    """Conv2D (same padding) -> (batch norm) -> activation -> (2x2 max pooling)."""
    from keras import layers

    x = layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        use_bias=not batch_norm,
        kernel_regularizer=kernel_regularizer(l2),
        name=f"conv_{index}",
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"conv_{index}_bn")(x)
    x = layers.Activation(activation, name=f"conv_{index}_{activation}")(x)
    if pool:
        x = layers.MaxPooling2D(2, name=f"conv_{index}_pool")(x)
    return x


def output_head(x: Any, data: DataSpec, l2: float) -> Any:
    """Softmax over classes for classification, linear targets for regression."""
    from keras import layers

    activation = "softmax" if data.task == "classification" else "linear"
    return layers.Dense(
        data.n_outputs,
        activation=activation,
        kernel_regularizer=kernel_regularizer(l2),
        name="output",
    )(x)


class RecurrentConfig(ArchConfig):
    """Stacked recurrent widths, cell activation(s), dropout between layers, dense head."""

    units: Widths = Field([32])
    # One name is used by every recurrent layer and dense head layer alike.
    activation: ActivationSpec = "tanh"
    dropout: DropoutRate = 0.0  # after each hidden layer (recurrent and dense)
    recurrent_dropout: DropoutRate = 0.0  # on the recurrent state, inside each cell
    l2: L2Factor = 0.0  # on input, recurrent and dense kernels
    dense: OptionalWidths = Field([])
    # Width of the embedding in front of the first layer; used by token ids and texts only.
    embedding: PositiveInt = 32

    @model_validator(mode="after")
    def _one_activation_per_layer(self) -> RecurrentConfig:
        check_per_layer(self.activation, len(self.units) + len(self.dense), "units + dense")
        return self


def recurrent_model(cell: Cell, name: str, cfg: RecurrentConfig, data: DataSpec) -> keras.Model:
    """Stacked ``cell`` layers (all but the last return sequences) and a head; images are read
    row by row as time steps. Token ids are embedded and every layer returns sequences: the
    head predicts the next token at every position (a language model). A text is cut into
    word ids, embedded, and read up to its last word (padding is masked)."""
    import keras
    from keras import layers

    activations = per_layer(cfg.activation, len(cfg.units) + len(cfg.dense))
    inputs, x = input_layers(data)
    if data.kind == "image":
        height, width, channels = data.input_shape
        x = layers.Reshape((height, width * channels), name="rows_as_steps")(x)
    if data.kind == "tokens":
        x = token_embedding(x, data, cfg.embedding)
    if data.kind == "text":
        vectorize = text_vectorizer(data, "int")
        x = layers.Embedding(
            vectorize.vocabulary_size(), cfg.embedding, mask_zero=True, name="embedding"
        )(vectorize(x))
    cell_class = getattr(layers, cell)
    # A language model predicts at every step: no layer collapses the sequence.
    last = len(cfg.units) + (1 if data.kind == "tokens" else 0)
    hidden = activations[: len(cfg.units)]
    for i, (width, activation) in enumerate(zip(cfg.units, hidden, strict=True), 1):
        x = cell_class(
            width,
            activation=activation,
            recurrent_dropout=cfg.recurrent_dropout,
            kernel_regularizer=kernel_regularizer(cfg.l2),
            recurrent_regularizer=kernel_regularizer(cfg.l2),
            return_sequences=i < last,
            name=f"{name}_{i}",
        )(x)
        if cfg.dropout > 0:
            x = layers.Dropout(cfg.dropout, name=f"{name}_{i}_dropout")(x)
    x = dense_stack(
        x,
        cfg.dense,
        activations[len(cfg.units) :],
        dropout=cfg.dropout,
        l2=cfg.l2,
        batch_norm=False,
    )
    return keras.Model(inputs, output_head(x, data, cfg.l2), name=name)

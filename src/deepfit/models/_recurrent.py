"""Shared config and builder of the stacked recurrent models (rnn, lstm)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from deepfit.models.base import (
    ActivationSpec,
    ArchConfig,
    DataSpec,
    DropoutRate,
    L2Factor,
    OptionalWidths,
    Widths,
    check_per_layer,
    per_layer,
)
from deepfit.models.fnn import dense_stack, kernel_regularizer, output_head

if TYPE_CHECKING:
    import keras

Cell = Literal["SimpleRNN", "LSTM"]


class RecurrentConfig(ArchConfig):
    """Stacked recurrent widths, cell activation(s), dropout between layers, dense head."""

    units: Widths = Field([32])
    # One name is used by every recurrent layer and dense head layer alike.
    activation: ActivationSpec = "tanh"
    dropout: DropoutRate = 0.0  # after each hidden layer (recurrent and dense)
    recurrent_dropout: DropoutRate = 0.0  # on the recurrent state, inside each cell
    l2: L2Factor = 0.0  # on input, recurrent and dense kernels
    dense: OptionalWidths = Field([])

    @model_validator(mode="after")
    def _one_activation_per_layer(self) -> RecurrentConfig:
        check_per_layer(self.activation, len(self.units) + len(self.dense), "units + dense")
        return self


def make_builder(cell: Cell, name: str) -> Callable[[RecurrentConfig, DataSpec], keras.Model]:
    """A builder stacking ``cell`` layers; images are read row by row as time steps."""

    def build(cfg: RecurrentConfig, data: DataSpec) -> keras.Model:
        import keras
        from keras import layers

        activations = per_layer(cfg.activation, len(cfg.units) + len(cfg.dense))
        inputs = keras.Input(shape=data.input_shape, name="inputs")
        x = inputs
        if data.kind == "image":
            height, width, channels = data.input_shape
            x = layers.Reshape((height, width * channels), name="rows_as_steps")(x)
        cell_class = getattr(layers, cell)
        last = len(cfg.units)
        for i, (width, activation) in enumerate(zip(cfg.units, activations[:last], strict=True), 1):
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
            activations[last:],
            dropout=cfg.dropout,
            l2=cfg.l2,
            batch_norm=False,
        )
        return keras.Model(inputs, output_head(x, data, cfg.l2), name=name)

    build.__doc__ = f"Stacked {cell} layers (all but the last return sequences) and a head."
    return build

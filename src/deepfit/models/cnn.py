"""Convolutional network for images: conv blocks with pooling while the image is large enough."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from deepfit.models.base import (
    ActivationSpec,
    ArchConfig,
    DataSpec,
    DropoutRate,
    L2Factor,
    ModelSpec,
    OptionalWidths,
    PositiveInt,
    Widths,
    check_per_layer,
    per_layer,
)
from deepfit.models.blocks import conv_block, dense_stack, input_layers, output_head

if TYPE_CHECKING:
    import keras

# Pool only while both sides stay >= 2 afterwards, so small images (8x8 digits) keep a grid.
MIN_SIDE_TO_POOL = 4


class CNNConfig(ArchConfig):
    """Conv filters per block, kernel size, dense head widths, activation(s), regularisation."""

    filters: Widths = Field([32, 64])
    kernel_size: PositiveInt = 3
    dense: OptionalWidths = Field([128])
    activation: ActivationSpec = "relu"
    dropout: DropoutRate = 0.3
    l2: L2Factor = 1e-4
    batch_norm: bool = False

    @model_validator(mode="after")
    def _one_activation_per_layer(self) -> CNNConfig:
        check_per_layer(self.activation, len(self.filters) + len(self.dense), "filters + dense")
        return self


def build(cfg: CNNConfig, data: DataSpec) -> keras.Model:
    """Conv blocks, flatten, dropout, the dense head and the task's output layer."""
    import keras
    from keras import layers

    activations = per_layer(cfg.activation, len(cfg.filters) + len(cfg.dense))
    inputs, x = input_layers(data)
    height, width = data.input_shape[:2]
    for i, filters in enumerate(cfg.filters, start=1):
        pool = min(height, width) >= MIN_SIDE_TO_POOL
        x = conv_block(
            x,
            filters,
            activations[i - 1],
            kernel_size=cfg.kernel_size,
            l2=cfg.l2,
            batch_norm=cfg.batch_norm,
            index=i,
            pool=pool,
        )
        if pool:
            height, width = height // 2, width // 2
    x = layers.Flatten(name="flatten")(x)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="flatten_dropout")(x)
    x = dense_stack(
        x,
        cfg.dense,
        activations[len(cfg.filters) :],
        dropout=cfg.dropout,
        l2=cfg.l2,
        batch_norm=cfg.batch_norm,
    )
    return keras.Model(inputs, output_head(x, data, cfg.l2), name="cnn")


SPEC = ModelSpec(
    name="cnn",
    config=CNNConfig,
    build=build,
    input_kinds=frozenset({"image"}),
    tasks=frozenset({"classification", "regression"}),
    description="Convolutional network: conv blocks (same padding, pooling) and a dense head",
)

"""Feed-forward network (MLP) on flattened inputs, or on a text's multi-hot bag of words."""

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
    Widths,
    check_per_layer,
    per_layer,
)
from deepfit.models.blocks import dense_stack, input_layers, output_head, text_vectorizer

if TYPE_CHECKING:
    import keras


class FNNConfig(ArchConfig):
    """Hidden widths, their activation(s), and regularisation of an MLP."""

    units: Widths = Field([256, 128])
    activation: ActivationSpec = "relu"
    dropout: DropoutRate = 0.2
    l2: L2Factor = 1e-4
    batch_norm: bool = False

    @model_validator(mode="after")
    def _one_activation_per_layer(self) -> FNNConfig:
        check_per_layer(self.activation, len(self.units), "units")
        return self


def build(cfg: FNNConfig, data: DataSpec) -> keras.Model:
    """Flatten any input (a text: its multi-hot bag of words), then the hidden dense stack and
    the task's output layer."""
    import keras
    from keras import layers

    inputs, x = input_layers(data)
    if data.kind == "text":
        x = text_vectorizer(data, "multi_hot")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    x = dense_stack(
        x,
        cfg.units,
        per_layer(cfg.activation, len(cfg.units)),
        dropout=cfg.dropout,
        l2=cfg.l2,
        batch_norm=cfg.batch_norm,
        prefix="hidden",
    )
    return keras.Model(inputs, output_head(x, data, cfg.l2), name="fnn")


SPEC = ModelSpec(
    name="fnn",
    config=FNNConfig,
    build=build,
    input_kinds=frozenset({"image", "sequence", "vector", "text"}),
    tasks=frozenset({"classification", "regression"}),
    description="Feed-forward network (MLP) on the flattened input; a text as a bag of words",
)

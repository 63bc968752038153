"""Feed-forward network (MLP) on flattened inputs; its dense blocks also serve as other heads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def build(cfg: FNNConfig, data: DataSpec) -> keras.Model:
    """Flatten any input, then the hidden dense stack and the task's output layer."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=data.input_shape, name="inputs")
    x = layers.Flatten(name="flatten")(inputs)
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
    input_kinds=frozenset({"image", "sequence", "vector"}),
    tasks=frozenset({"classification", "regression"}),
    description="Feed-forward network (MLP) on the flattened input",
)

"""Shared pieces of every architecture: strict config base, activation names, data spec, ModelSpec.

Nothing here imports Keras; builders import it when they are called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deepfit.data.config import DataSpec as DataSpec
from deepfit.data.config import InputKind as InputKind
from deepfit.data.config import Task as Task

if TYPE_CHECKING:
    import keras

# Keras 3 activation names users may choose (a unit test checks each resolves in Keras).
Activation = Literal[
    "relu",
    "sigmoid",
    "tanh",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "softplus",
    "softsign",
    "leaky_relu",
    "relu6",
    "mish",
    "hard_sigmoid",
    "hard_silu",
    "linear",
    "exponential",
]

# Field types shared by architecture configs (pydantic enforces the ranges and names the key).
PositiveInt = Annotated[int, Field(gt=0)]
Widths = Annotated[list[PositiveInt], Field(min_length=1)]  # one size per layer, at least one
OptionalWidths = list[PositiveInt]  # may be empty (e.g. no dense head)
DropoutRate = Annotated[float, Field(ge=0.0, lt=1.0)]
L2Factor = Annotated[float, Field(ge=0.0)]
ActivationSpec = Activation | list[Activation]  # one name for all hidden layers, or one per layer


class ModelFileError(ValueError):
    """A saved model that cannot or must not be loaded; the message names the file."""


class ArchConfig(BaseModel):
    """Base of every architecture's config: strict (unknown keys and wrong types are errors)."""

    # strict: "10" is not silently read as 10; YAML already gives numbers their own types.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its name, config class, builder and what data it accepts."""

    name: str
    config: type[ArchConfig]
    build: Callable[[Any, DataSpec], keras.Model]
    input_kinds: frozenset[str]
    tasks: frozenset[str]
    generative: bool = False  # trained on inputs alone (GAN); evaluated by sample quality
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def per_layer(activation: str | list[str], n_layers: int) -> list[str]:
    """Expand one activation (or one per layer) to a list of ``n_layers`` names."""
    if isinstance(activation, str):
        return [activation] * n_layers
    return list(activation)


def check_per_layer(activation: str | list[str], n_layers: int, layers: str) -> None:
    """Fail unless ``activation`` is one name or exactly one name per hidden layer.

    ``layers`` says which keys the hidden layers come from, for the error message.
    """
    if isinstance(activation, list) and len(activation) != n_layers:
        raise ValueError(
            f"activation: expected one name or a list of {n_layers} names "
            f"(one per hidden layer: {layers}), got {len(activation)}"
        )

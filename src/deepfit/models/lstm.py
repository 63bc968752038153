"""Stacked LSTM for sequences (and images read row by row), token ids and texts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepfit.models.base import DataSpec, ModelSpec
from deepfit.models.blocks import RecurrentConfig, recurrent_model

if TYPE_CHECKING:
    import keras


class LSTMConfig(RecurrentConfig):
    """LSTM widths, cell activation(s), dropout, recurrent dropout, L2, dense head."""


def build(cfg: LSTMConfig, data: DataSpec) -> keras.Model:
    """Stacked LSTM layers (all but the last return sequences) and a dense head."""
    return recurrent_model("LSTM", "lstm", cfg, data)


SPEC = ModelSpec(
    name="lstm",
    config=LSTMConfig,
    build=build,
    input_kinds=frozenset({"sequence", "image", "tokens", "text"}),
    tasks=frozenset({"classification", "regression"}),
    description=(
        "Stacked LSTM; images are read row by row as time steps; token ids are embedded "
        "and the next one predicted at every step (a language model); a text is read as "
        "embedded word ids"
    ),
)

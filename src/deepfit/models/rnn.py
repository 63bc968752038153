"""Stacked SimpleRNN for sequences (and images read row by row)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepfit.models.base import DataSpec, ModelSpec
from deepfit.models.blocks import RecurrentConfig, recurrent_model

if TYPE_CHECKING:
    import keras


class RNNConfig(RecurrentConfig):
    """SimpleRNN widths, cell activation(s), dropout, recurrent dropout, L2, dense head."""


def build(cfg: RNNConfig, data: DataSpec) -> keras.Model:
    """Stacked SimpleRNN layers (all but the last return sequences) and a dense head."""
    return recurrent_model("SimpleRNN", "rnn", cfg, data)


SPEC = ModelSpec(
    name="rnn",
    config=RNNConfig,
    build=build,
    input_kinds=frozenset({"sequence", "image", "tokens"}),
    tasks=frozenset({"classification", "regression"}),
    description=(
        "Stacked SimpleRNN; images are read row by row as time steps; token ids are embedded "
        "and the next one predicted at every step (a language model)"
    ),
)

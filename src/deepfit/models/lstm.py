"""Stacked LSTM for sequences (and images read row by row)."""

from __future__ import annotations

from deepfit.models._recurrent import RecurrentConfig, make_builder
from deepfit.models.base import ModelSpec


class LSTMConfig(RecurrentConfig):
    """LSTM widths, cell activation(s), dropout, recurrent dropout, L2, dense head."""


build = make_builder("LSTM", "lstm")

SPEC = ModelSpec(
    name="lstm",
    config=LSTMConfig,
    build=build,
    input_kinds=frozenset({"sequence", "image"}),
    tasks=frozenset({"classification", "regression"}),
    description="Stacked LSTM; images are read row by row as time steps",
)

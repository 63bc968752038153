"""Stacked SimpleRNN for sequences (and images read row by row)."""

from __future__ import annotations

from deepfit.models._recurrent import RecurrentConfig, make_builder
from deepfit.models.base import ModelSpec


class RNNConfig(RecurrentConfig):
    """SimpleRNN widths, cell activation(s), dropout, recurrent dropout, L2, dense head."""


build = make_builder("SimpleRNN", "rnn")

SPEC = ModelSpec(
    name="rnn",
    config=RNNConfig,
    build=build,
    input_kinds=frozenset({"sequence", "image"}),
    tasks=frozenset({"classification", "regression"}),
    description="Stacked SimpleRNN; images are read row by row as time steps",
)

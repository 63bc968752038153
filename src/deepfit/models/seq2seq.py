"""Encoder-decoder LSTM for translation datasets: teacher forcing in training, greedy decoding.

The Keras model class ``Seq2Seq`` lives in ``deepfit.models.seq2seq_network``, imported when a
model is built or loaded, so validating params.yaml does not import Keras.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepfit.models.base import ArchConfig, DataSpec, ModelSpec, PositiveInt

if TYPE_CHECKING:
    import keras


class Seq2SeqConfig(ArchConfig):
    """Embedding width, LSTM units of encoder and decoder, and whether the decoder attends."""

    embedding: PositiveInt = 64
    units: PositiveInt = 128
    attention: bool = True  # dot-product attention over the encoder's outputs at each step


def build(cfg: Seq2SeqConfig, data: DataSpec) -> keras.Model:
    """The encoder-decoder for source ids (S,) -> target ids (T,), built on the data's shapes."""
    from deepfit.models.seq2seq_network import Seq2Seq

    if data.input_vocab is None:
        raise ValueError("seq2seq needs a translation dataset (a source vocabulary)")
    model = Seq2Seq(
        source_vocab=data.input_vocab,
        target_vocab=data.n_outputs,
        target_length=data.target_length,
        embedding=cfg.embedding,
        units=cfg.units,
        attention=cfg.attention,
        name="seq2seq",
    )
    model.build((None, data.input_shape[0]))
    return model


def custom_objects() -> dict[str, type]:
    """What ``keras.saving.load_model`` needs to load a saved encoder-decoder."""
    from deepfit.models.seq2seq_network import Seq2Seq

    return {"deepfit>Seq2Seq": Seq2Seq}


SPEC = ModelSpec(
    name="seq2seq",
    config=Seq2SeqConfig,
    build=build,
    input_kinds=frozenset({"translation"}),
    tasks=frozenset({"classification"}),
    description="LSTM encoder-decoder (optional attention): teacher forcing, greedy decoding",
    extra={"custom_objects": custom_objects},
)

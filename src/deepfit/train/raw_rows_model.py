"""The MLflow model of a run on a table or on texts (models from code): a pandas DataFrame of
raw CSV rows, or raw texts (one column of any name, a list, a Series), in; predictions out.

MLflow copies this file into the logged model and runs it when the model is loaded, so it
imports nothing from deepfit. The Keras model it loads (an artifact) holds all fitted
preprocessing as layers (a text model its TextVectorization); this wrapper only turns the
DataFrame into one tensor per column, fills empty numeric cells with the training median and
names the outputs. A character language model's texts become character ids here (its
vocabulary is the outputs), and it returns the next character's probabilities. The toy
translation's sentences become word ids, and its greedy decoding words again: that model
carries the files it imports (MLflow ``code_paths``): ``seq2seq_network`` (its Keras class)
and ``words`` (the corpus' words and ids).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

BOOLEAN = {"true": 1.0, "false": 0.0}
# Texts a language model reads per call: its output holds every position's probabilities.
CHUNK = 64


class RawRowsModel(PythonModel):
    """Raw rows -> class probabilities (one column per class) or targets in their own units."""

    def load_context(self, context: Any) -> None:
        import keras

        self.config = context.model_config
        if self.config["columns"][0]["kind"] == "words":
            import seq2seq_network  # noqa: F401 (registers the encoder-decoder's Keras class)
        self.model = keras.saving.load_model(context.artifacts["keras_model"], safe_mode=True)
        self.columns = self.config["columns"]
        self.outputs = self.config["outputs"]

    # MLflow hands a DataFrame in (the logged signature converts lists and Series). It infers
    # no schema from this hint, and without a hint it warns at every load.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        frame = pd.DataFrame(model_input)
        if self.columns[0]["kind"] == "characters":
            return self._next_characters(frame)
        if self.columns[0]["kind"] == "words":
            return self._translate(frame)
        named = [c["name"] for c in self.columns if c["name"] is not None]
        absent = [name for name in named if name not in frame.columns]
        if absent:
            raise ValueError(f"missing input columns: {', '.join(absent)}")
        if not named and frame.shape[1] != 1:
            raise ValueError(f"expected one column of texts, got {frame.shape[1]} columns")
        inputs = {
            f"column_{i}": column_input(_cells(frame, c), c) for i, c in enumerate(self.columns)
        }
        # A model of one input takes its tensor (a dict would not match its structure).
        batch = inputs if len(inputs) > 1 else next(iter(inputs.values()))
        out = np.asarray(self.model.predict(batch, batch_size=1024, verbose=0))
        return pd.DataFrame(out, columns=self.outputs, index=frame.index)

    def _next_characters(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Each text's next-character probabilities. Its characters become ids (one not in the
        vocabulary: 0, the unknown token), padded on the right to the longest text: the network
        reads left to right, so the padding cannot change its output at a text's last
        character, which is the one read."""
        texts = _texts(frame)
        if not all(texts):
            raise ValueError("an empty text: the language model continues at least one character")
        index = {character: i for i, character in enumerate(self.outputs)}
        out = np.empty((len(texts), len(self.outputs)), dtype=np.float32)
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start : start + CHUNK]
            ids = np.zeros((len(chunk), max(map(len, chunk))), dtype=np.int32)
            for row, text in enumerate(chunk):
                ids[row, : len(text)] = [index.get(character, 0) for character in text]
            proba = np.asarray(self.model.predict(ids, batch_size=len(chunk), verbose=0))
            last = [len(text) - 1 for text in chunk]
            out[start : start + len(chunk)] = proba[np.arange(len(chunk)), last]
        return pd.DataFrame(out, columns=self.outputs, index=frame.index)

    def _translate(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Each sentence's greedy translation. Its words and hyphens become ids (a word not in
        the training vocabulary: the unknown token); a sentence longer than the longest
        source of the corpus is refused."""
        import words

        limit = self.config["source_length"]
        texts = _texts(frame)
        sentences = [words.tokens(text) for text in texts]
        for text, sentence in zip(texts, sentences, strict=True):
            if not sentence or len(sentence) > limit:
                count = f"{len(sentence)} words and hyphens"
                raise ValueError(f"{text!r}: {count}; the model reads 1 to {limit}")
        ids = words.encode(sentences, self.config["source_vocab"], limit, [])
        proba = np.asarray(self.model.predict(ids, batch_size=256, verbose=0))
        texts = words.ids_to_text(proba.argmax(axis=-1), self.config["target_vocab"])
        return pd.DataFrame({self.outputs[0]: texts}, index=frame.index)


def _texts(frame: pd.DataFrame) -> list[str]:
    """The one column of ``frame`` as texts: a missing cell or a number is refused, not read as
    the text "None" or "42"."""
    if frame.shape[1] != 1:
        raise ValueError(f"expected one column of texts, got {frame.shape[1]} columns")
    texts = frame.iloc[:, 0].tolist()
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            missing = text is None or (isinstance(text, float) and np.isnan(text))
            got = "a missing cell" if missing else repr(text)
            raise ValueError(f"row {row}: expected a text, got {got}")
    return texts


def _cells(frame: pd.DataFrame, column: dict[str, Any]) -> pd.Series:
    """A table's column by name; the one column of texts whatever its name (``None``)."""
    return frame[column["name"]] if column["name"] is not None else frame.iloc[:, 0]


def column_input(cells: pd.Series, column: dict[str, Any]) -> Any:
    """One column as the Keras model's input: a string tensor for categories (n, 1) and texts
    (n,) (Keras takes no NumPy text arrays), float32 (n, 1) otherwise."""
    if column["kind"] in ("categorical", "text"):
        import tensorflow as tf

        text = cells.astype(object).where(cells.notna(), column["fill"]).astype(str)
        strings = text.to_numpy(dtype=object)
        # A category is one (n, 1) column of a table; a text model reads one string per row.
        return tf.constant(strings[:, None] if column["kind"] == "categorical" else strings)
    if pd.api.types.is_numeric_dtype(cells) or pd.api.types.is_bool_dtype(cells):
        values = cells.to_numpy(dtype=np.float64, na_value=np.nan)
    else:  # text or objects (JSON from `mlflow models serve`): one cell at a time
        values = cells.astype(object).map(_number).to_numpy(dtype=np.float64)
    return np.where(np.isnan(values), column["fill"], values).astype(np.float32)[:, None]


def _number(value: Any) -> float:
    """A cell as a float: numbers, booleans and their text forms; anything else is missing."""
    if value is None:
        return np.nan
    if isinstance(value, str):
        word = value.strip().lower()
        try:
            return BOOLEAN[word] if word in BOOLEAN else float(word)
        except ValueError:
            return np.nan
    return float(value)


mlflow.models.set_model(RawRowsModel())

"""source: text_folder — class sub-folders of UTF-8 .txt files under data/raw/ (IMDB's aclImdb
layout), and keras.datasets' IMDB turned back into words: raw texts and labels per split, and
the vocabulary of the training split.

Each .txt file is one sample, its text kept as written (a leading byte-order mark dropped); its
class is its folder. The split is made on the file list before any file is read: stratified
fractions, or the tree's own train/ and test/ folders with val drawn from train/. The texts are
stored raw (``deepfit.data.io``: UTF-8 bytes and offsets). The vocabulary is fitted by Keras'
``TextVectorization`` on the training texts only (lower-cased, punctuation stripped, split on
whitespace; the ``vocabulary_size`` - 2 most frequent words) and written beside the splits: each
model builds its own TextVectorization layer from it, so a saved model takes raw strings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepfit.data import folders, sources
from deepfit.data.config import KerasConfig, TextFolderConfig
from deepfit.data.errors import DataError
from deepfit.data.prepare import Built, keras_rows
from deepfit.data.text import decode_utf8

log = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset({".txt"})
TEXTS = ".txt files"  # what a class folder without texts lacks
BOM = "\ufeff"
# Tokens TextVectorization keeps besides the words: padding ("") and unknown ("[UNK]").
SPECIAL_TOKENS = 2
# Texts per batch while the vocabulary is counted.
ADAPT_BATCH = 1024


def build_text_folder(cfg: TextFolderConfig, seed: int, raw_dir: Path, where: str) -> Built:
    """Split a class-folder tree of .txt files, read every file, fit the vocabulary on train."""
    root = sources.resolve_raw_dir(cfg.path, raw_dir, f"{where}.path")
    parts = folders.tree_parts(root)
    classes = folders.class_names(parts, where, cfg.classes)
    listings = {
        part: folders.list_files(folder, classes, raw_dir, TEXT_SUFFIXES, TEXTS)
        for part, folder in parts.items()
    }
    files = folders.split_files(listings, cfg.val_fraction, cfg.test_fraction, seed, where)
    splits = {
        split: {"x": read_texts(paths), "y": labels, "file": relative(paths, root)}
        for split, (paths, labels) in files.items()
    }
    skipped = folders.skipped_files(listings, root)
    if skipped:
        log.warning("%s: skipped %d files that are not .txt: %s", root, len(skipped), skipped[:5])
    details = {
        "layout": folders.layout(parts),
        "skipped_files": {"count": len(skipped), "first": skipped[:20]},
    }
    return text_built(splits, classes, cfg.text_settings(), details, where)


def build_imdb(cfg: KerasConfig, seed: int, where: str) -> Built:
    """keras.datasets.imdb as texts: val drawn from Keras' training reviews (at most ``limit``
    of them), Keras' test reviews whole."""
    (x_pool, y_pool), (x_test, y_test) = sources.load_imdb(f"{where}.name")
    train, val = keras_rows(y_pool, cfg, seed, where)
    splits = {
        "train": {"x": x_pool[train], "y": y_pool[train]},
        "val": {"x": x_pool[val], "y": y_pool[val]},
        "test": {"x": x_test, "y": y_test},
    }
    details = {"origin": "keras.datasets.imdb, decoded with imdb.get_word_index()"}
    classes = list(sources.KERAS_CLASSES["imdb"])
    return text_built(splits, classes, cfg.text_settings(), details, where)


def read_texts(paths: Sequence[Path]) -> np.ndarray:
    """Every file's text, as an array of ``str``."""
    return np.array([read_text(path) for path in paths], dtype=object)


def read_text(path: Path) -> str:
    """One sample: the file's UTF-8 text; DataError naming the file when it is not UTF-8 (with
    the byte offset) or holds no text."""
    text = decode_utf8(path.read_bytes(), path).removeprefix(BOM)
    if not text.strip():
        raise DataError(f"{path}: the file holds no text; each .txt file is one sample")
    return text


def relative(paths: Sequence[Path], root: Path) -> np.ndarray:
    """File names relative to the tree's root (``pos/0001.txt``), kept beside each sample."""
    return np.array([path.relative_to(root).as_posix() for path in paths], dtype=object)


def text_built(
    splits: dict[str, dict[str, np.ndarray]],
    classes: list[str],
    settings: tuple[int, int],
    details: dict[str, Any],
    where: str,
) -> Built:
    """The splits, with the vocabulary fitted on train and the facts the manifest records."""
    size, length = settings
    vocabulary = fit_vocabulary(splits["train"]["x"], size)
    if not vocabulary:
        raise DataError(f"{where}: the training texts hold no words (only punctuation or spaces)")
    words = np.array([len(text.split()) for text in splits["train"]["x"]])
    details = {
        **details,
        "vocabulary_size": size,
        "words_in_vocabulary": len(vocabulary),
        "sequence_length": length,
        "train_words_per_text": {
            "median": float(np.median(words)),
            "p90": float(np.percentile(words, 90)),
            "max": int(words.max()),
        },
        "class_counts": {split: _counts(data["y"], classes) for split, data in splits.items()},
    }
    scale = {"method": "none (raw text: the model's TextVectorization layer reads it)"}
    return Built(splits, classes, feature_scale=scale, details=details, vocabulary=vocabulary)


def _counts(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(classes)).tolist()
    return dict(zip(classes, counts, strict=True))


def fit_vocabulary(texts: np.ndarray, size: int) -> list[str]:
    """The words of ``texts`` as Keras' TextVectorization counts them, most frequent first: at
    most ``size`` tokens with the padding and unknown ones, which are left out here."""
    import keras  # TensorFlow: the vocabulary is the one the models' layer will use
    import tensorflow as tf

    layer = keras.layers.TextVectorization(max_tokens=size, output_mode="int")
    layer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(ADAPT_BATCH))
    return [str(word) for word in layer.get_vocabulary(include_special_tokens=False)]

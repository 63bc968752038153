"""The toy translation's words and ids, importing nothing from deepfit.

Words and hyphens are the tokens; ids are padded with 0 on the right. Prepare uses this module,
and the logged ``seq2seq`` model carries a copy (MLflow ``code_paths``) to read raw sentences
and write its translations, so it needs NumPy alone.
"""

from __future__ import annotations

import re

import numpy as np

PAD, START, END, UNKNOWN = "<pad>", "<start>", "<end>", "<unk>"
# Ids of the special tokens: targets start with START (teacher forcing) and close with END.
PAD_ID, START_ID, END_ID = 0, 1, 2
TOKEN = re.compile(r"[^\s-]+|-")


def tokens(text: str) -> list[str]:
    """Words and hyphens, in order."""
    return TOKEN.findall(text)


def detokenize(words: list[str]) -> str:
    """The text of ``tokens(text)`` again: hyphens join their neighbours, spaces the rest."""
    out = ""
    for i, word in enumerate(words):
        glued = word == "-" or (i > 0 and words[i - 1] == "-")
        out += word if glued or not out else f" {word}"
    return out


def encode(
    sentences: list[list[str]], vocab: list[str], length: int, tail: list[str]
) -> np.ndarray:
    """Each sentence's words (then ``tail``) as ids of ``vocab``, padded with 0 to ``length``
    (an unknown word: the id of ``UNKNOWN``)."""
    index = {word: i for i, word in enumerate(vocab)}
    unknown = index[UNKNOWN]
    out = np.zeros((len(sentences), length), dtype=np.int32)
    for row, words in enumerate(sentences):
        ids = [index.get(word, unknown) for word in words + tail]
        out[row, : len(ids)] = ids
    return out


def ids_to_text(ids: np.ndarray, vocab: list[str]) -> list[str]:
    """Each row of ids as text: up to the first end (or padding) token, special tokens dropped."""
    special = {PAD, START, END, UNKNOWN}
    texts = []
    for row in np.asarray(ids):
        words = []
        for i in row:
            word = vocab[int(i)] if 0 <= int(i) < len(vocab) else UNKNOWN
            if word in (END, PAD):
                break
            if word not in special:
                words.append(word)
        texts.append(detokenize(words))
    return texts

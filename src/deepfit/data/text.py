"""source: text — a character corpus (a UTF-8 file under data/raw/ or the bundled python_docs),
split by position into train/val/test blocks and cut into windows of character ids.

Each block is cut on its own into non-overlapping windows: window i holds the ids at positions
``i*T .. i*T+T-1`` (``x``) and the ids one position later (``y``, the next characters), so no
window crosses a block boundary and no character is a target twice. The vocabulary is the
training block's characters (sorted by code point) after id 0, the unknown token: a character
unseen in training is id 0 in every split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepfit.data import sources
from deepfit.data.config import TextConfig
from deepfit.data.errors import DataError
from deepfit.data.io import SPLITS
from deepfit.data.prepare import Built

# The unknown token's id and its name in the vocabulary (a character no text contains).
UNKNOWN_ID = 0
UNKNOWN = "\ufffd"
# Windows per block must be at least one; a corpus shorter than this many windows is refused.
MIN_WINDOWS = 3


def build_text(cfg: TextConfig, seed: int, raw_dir: Path, where: str) -> Built:
    """Read the corpus, split it into blocks, map characters to ids, cut the blocks into windows."""
    text, origin = read_corpus(cfg, raw_dir, where)
    text = text[: cfg.max_characters]  # None keeps all
    length = cfg.sequence_length
    if len(text) < length * MIN_WINDOWS:
        raise DataError(
            f"{where}.sequence_length: {length} needs a corpus of at least {length * MIN_WINDOWS}"
            f" characters ({MIN_WINDOWS} windows), {origin} has {len(text)}"
        )
    blocks = split_blocks(text, cfg.val_fraction, cfg.test_fraction)
    vocab = [UNKNOWN, *sorted(set(blocks["train"]) - {UNKNOWN})]
    index = {char: i for i, char in enumerate(vocab)}
    dtype = np.uint8 if len(vocab) <= 256 else np.uint16
    splits, unknown = {}, {}
    for split, block in blocks.items():
        ids = np.fromiter((index.get(c, UNKNOWN_ID) for c in block), dtype=dtype, count=len(block))
        if len(ids) < length + 1:
            raise DataError(
                f"{where}.sequence_length: the {split} block has {len(ids)} characters, fewer than"
                f" one window of {length} + 1; lower sequence_length or use a longer corpus"
            )
        splits[split] = windows(ids, length)
        unknown[split] = int(np.sum(ids == UNKNOWN_ID))
    details = {
        "origin": origin,
        "characters": {split: len(block) for split, block in blocks.items()},
        "unknown_characters": unknown,
        "unknown_id": UNKNOWN_ID,
        "vocab_size": len(vocab),
    }
    scale = {"method": "none (character ids)"}
    return Built(splits, vocab, feature_scale=scale, details=details)


def read_corpus(cfg: TextConfig, raw_dir: Path, where: str) -> tuple[str, str]:
    """The corpus text and where it came from (a file name, or the bundled corpus' name)."""
    if cfg.corpus == "python_docs":
        return python_docs(), "python_docs (pydoc_data.topics)"
    assert cfg.path is not None  # the config guarantees one of path and corpus
    file = sources.resolve_raw(cfg.path, raw_dir, f"{where}.path")
    return read_utf8(file), str(file)


def python_docs() -> str:
    """The standard library's documentation topics, joined in sorted key order (~465k chars)."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def read_utf8(file: Path) -> str:
    """A file's text; DataError naming the file and the first bad byte's offset, or empty."""
    data = file.read_bytes()
    if not data:
        raise DataError(f"{file}: the file is empty; a text corpus needs characters")
    return decode_utf8(data, file)


def decode_utf8(data: bytes, file: Path) -> str:
    """``data`` (the bytes of ``file``) as text; DataError naming the file and the byte offset
    of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{file}: not UTF-8 (byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
            f"cannot be decoded: {exc.reason})"
        ) from None


def split_blocks(text: str, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Train, val and test blocks in text order: the first part trains, the last part tests."""
    n = len(text)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    bounds = [0, n - n_val - n_test, n - n_test, n]
    return {split: text[bounds[i] : bounds[i + 1]] for i, split in enumerate(SPLITS)}


def windows(ids: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """Non-overlapping windows of ``length`` ids (``x``) and the ids one position later (``y``)."""
    n = (len(ids) - 1) // length
    x = ids[: n * length].reshape(n, length)
    y = ids[1 : n * length + 1].reshape(n, length)
    return {"x": x, "y": y}

"""source: translation — a generated toy translation corpus: numbers written in English words to
the same numbers in French words.

It tests the mechanics of sequence-to-sequence learning, not real translation. The two languages
differ in word order and morphology where French numbers do ("seventy-one" is "soixante et
onze", "eighty" is "quatre-vingts" but "eighty-one" "quatre-vingt-un", "two hundred" is
"deux cents" but "two hundred one" "deux cent un"). Distinct numbers are drawn without
replacement from 0..max_number with the split seed, so no test number was seen in training. The
numbers below 100, the words and irregular forms every larger number is made of, are all in the
training split (drawn uniformly they were 1 % of it, and the model got many of them wrong).
Words and hyphens are the tokens, ids padded with 0 on the right (``deepfit.data.words``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepfit.data.config import TranslationConfig
from deepfit.data.errors import DataError
from deepfit.data.io import SPLITS
from deepfit.data.prepare import Built
from deepfit.data.words import END, END_ID, PAD, PAD_ID, START, START_ID, UNKNOWN, encode, tokens

LEXICON = 100  # the numbers always in the training split: 0..99

_EN_SMALL = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_EN_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_FR_SMALL = [
    "zéro",
    "un",
    "deux",
    "trois",
    "quatre",
    "cinq",
    "six",
    "sept",
    "huit",
    "neuf",
    "dix",
    "onze",
    "douze",
    "treize",
    "quatorze",
    "quinze",
    "seize",
    "dix-sept",
    "dix-huit",
    "dix-neuf",
]
_FR_TENS = ["_", "_", "vingt", "trente", "quarante", "cinquante", "soixante"]


def english(n: int) -> str:
    """``n`` (0..999,999) in English words, American style ("three hundred forty-two")."""
    if n < 20:
        return _EN_SMALL[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _EN_TENS[tens] + (f"-{_EN_SMALL[unit]}" if unit else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_EN_SMALL[hundreds]} hundred" + (f" {english(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{english(thousands)} thousand" + (f" {english(rest)}" if rest else "")


def french(n: int) -> str:
    """``n`` (0..999,999) in French words, traditional spelling ("quatre-vingt-dix-sept")."""
    if n < 100:
        return _french_below_100(n)
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        # "cent", "deux cents", but "deux cent un"
        head = "cent" if hundreds == 1 else f"{_FR_SMALL[hundreds]} cent" + ("" if rest else "s")
        return head + (f" {french(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    # "mille" never takes an s; "quatre-vingts" and "cents" lose theirs before it.
    head = french(thousands)
    if head.endswith(("vingts", "cents")):
        head = head[:-1]
    head = "mille" if thousands == 1 else f"{head} mille"
    return head + (f" {french(rest)}" if rest else "")


def _french_below_100(n: int) -> str:
    if n < 20:
        return _FR_SMALL[n]
    tens, unit = divmod(n, 10)
    if tens in (7, 9):  # soixante-dix, quatre-vingt-dix: sixty/eighty plus 10..19
        base = "soixante" if tens == 7 else "quatre-vingt"
        joiner = " et " if (tens, unit) == (7, 1) else "-"
        return f"{base}{joiner}{_FR_SMALL[10 + unit]}"
    if tens == 8:
        return "quatre-vingt" + (f"-{_FR_SMALL[unit]}" if unit else "s")
    if unit == 1:
        return f"{_FR_TENS[tens]} et un"
    return _FR_TENS[tens] + (f"-{_FR_SMALL[unit]}" if unit else "")


def build_translation(cfg: TranslationConfig, seed: int, raw_dir: Path, where: str) -> Built:
    """Draw distinct numbers per split, write both languages, map tokens to padded ids."""
    sizes = {"train": cfg.train_size, "val": cfg.val_size, "test": cfg.test_size}
    total = sum(sizes.values())
    if total > cfg.max_number + 1:
        raise DataError(
            f"{where}.max_number: {cfg.max_number} gives {cfg.max_number + 1} distinct numbers, "
            f"fewer than train_size + val_size + test_size = {total}"
        )
    rng = np.random.default_rng(seed)
    # The numbers below 100 are the words every larger number is built from: all of them are
    # trained on (as many as train_size holds), and each split draws the rest from the others.
    lexicon = rng.permutation(min(LEXICON, cfg.max_number + 1))[: cfg.train_size]
    others = np.setdiff1d(np.arange(cfg.max_number + 1), lexicon)
    rest = rng.choice(others, size=total - len(lexicon), replace=False)
    train = rng.permutation(np.concatenate([lexicon, rest[: cfg.train_size - len(lexicon)]]))
    numbers = np.concatenate([train, rest[cfg.train_size - len(lexicon) :]])
    bounds = np.cumsum([0, *sizes.values()])
    drawn = {s: numbers[bounds[i] : bounds[i + 1]] for i, s in enumerate(SPLITS)}
    pairs = {s: [(tokens(english(n)), tokens(french(n))) for n in drawn[s]] for s in SPLITS}
    source_vocab = [PAD, UNKNOWN, *sorted({w for src, _ in pairs["train"] for w in src})]
    target_vocab = [PAD, START, END, UNKNOWN, *sorted({w for _, t in pairs["train"] for w in t})]
    source_length = max(len(src) for split in pairs.values() for src, _ in split)
    target_length = max(len(t) for split in pairs.values() for _, t in split) + 1  # + END
    splits = {
        split: {
            "x": encode([src for src, _ in found], source_vocab, source_length, []),
            "y": encode([t for _, t in found], target_vocab, target_length, [END]),
            "number": drawn[split].astype(np.int64),
        }
        for split, found in pairs.items()
    }
    details = {
        "task": cfg.task,
        "source_vocab": source_vocab,
        "source_length": source_length,
        "target_length": target_length,
        "special_ids": {"pad": PAD_ID, "start": START_ID, "end": END_ID},
        "example": {
            "source": english(int(drawn["val"][0])),
            "target": french(int(drawn["val"][0])),
        },
    }
    return Built(
        splits, target_vocab, feature_scale={"method": "none (token ids)"}, details=details
    )

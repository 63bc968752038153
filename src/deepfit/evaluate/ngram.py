"""Character n-gram language models on windows of ids, scored in bits per predicted character.

The models see what the networks see: the windows of the prepared dataset, each on its own. The
target at position t of a window has the context of the window's ids up to t (``x[:, :t+1]``),
so at the start of a window a long n-gram backs off to shorter contexts exactly as the network
has less to go on. Counts are vectorised with numpy: a context of k ids is one integer in base V.

``ngram_bits`` interpolates every order with absolute discounting (the interpolation of
Kneser-Ney, with plain lower-order counts): for a context h of k ids and its shorter context h',
``P(c|h) = max(C(h,c) - d, 0) / C(h) + d * N(h) / C(h) * P(c|h')``, where N(h) is the number of
distinct characters seen after h; an unseen context is P(c|h'). Order 1 is the add-one unigram.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LN2 = float(np.log(2.0))
# Context codes are integers in base V: V ** (order - 1) * V must fit in an int64.
MAX_CODE = 2**62


@dataclass(frozen=True)
class Counts:
    """Sorted codes with their counts, for fast lookups with ``np.searchsorted``."""

    codes: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, codes: np.ndarray) -> Counts:
        found, counts = np.unique(codes, return_counts=True)
        return cls(found, counts)

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """Counts of ``codes`` (0 where unseen)."""
        at = np.clip(np.searchsorted(self.codes, codes), 0, max(len(self.codes) - 1, 0))
        hit = self.codes[at] == codes if len(self.codes) else np.zeros(len(codes), bool)
        return np.where(hit, self.counts[at] if len(self.counts) else 0, 0)


def unigram_bits(y_train: np.ndarray, y_eval: np.ndarray, vocab: int) -> np.ndarray:
    """Bits of each target of ``y_eval`` under add-one smoothed training character frequencies."""
    counts = np.bincount(y_train.reshape(-1).astype(np.int64), minlength=vocab) + 1.0
    proba = counts / counts.sum()
    return -np.log2(proba[y_eval.astype(np.int64)])


def context_codes(x: np.ndarray, t: int, k: int, vocab: int) -> np.ndarray:
    """The last ``k`` ids of each window up to position ``t`` as one integer per window."""
    code = np.zeros(len(x), dtype=np.int64)
    for j in range(t - k + 1, t + 1):
        code = code * vocab + x[:, j].astype(np.int64)
    return code


def _check_order(order: int, vocab: int) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"baseline grid 'order' values must be positive integers, got {order!r}")
    if vocab**order >= MAX_CODE:
        raise ValueError(f"baseline grid order {order} is too long for {vocab} characters")


def fit_counts(x: np.ndarray, y: np.ndarray, order: int, vocab: int) -> list[tuple[Counts, ...]]:
    """Per context length k = 1..order-1: counts of (context, next) pairs, of contexts, and
    of distinct next characters per context, over every window position with k ids before it."""
    _check_order(order, vocab)
    levels = []
    for k in range(1, order):
        pairs, contexts = [], []
        for t in range(k - 1, x.shape[1]):
            ctx = context_codes(x, t, k, vocab)
            contexts.append(ctx)
            pairs.append(ctx * vocab + y[:, t].astype(np.int64))
        pair_counts = Counts.of(np.concatenate(pairs))
        distinct = Counts.of(pair_counts.codes // vocab)  # one entry per seen (context, next)
        levels.append((pair_counts, Counts.of(np.concatenate(contexts)), distinct))
    return levels


def ngram_bits(
    levels: list[tuple[Counts, ...]],
    y_train: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    vocab: int,
    discount: float,
) -> np.ndarray:
    """Bits of every target of the windows ``(x, y)`` under the interpolated model, (n, T)."""
    if not 0.0 < discount < 1.0:
        raise ValueError(f"baseline grid 'discount' values must lie in (0, 1), got {discount!r}")
    bits = np.empty(y.shape, dtype=np.float64)
    base = 2.0 ** -unigram_bits(y_train, y, vocab)
    for t in range(x.shape[1]):
        proba = base[:, t]
        target = y[:, t].astype(np.int64)
        for k, (pairs, contexts, distinct) in enumerate(levels[: t + 1], start=1):
            ctx = context_codes(x, t, k, vocab)
            seen = contexts.lookup(ctx).astype(np.float64)
            joint = pairs.lookup(ctx * vocab + target)
            types = distinct.lookup(ctx)
            safe = np.maximum(seen, 1.0)
            mixed = np.maximum(joint - discount, 0.0) / safe + discount * types / safe * proba
            proba = np.where(seen > 0, mixed, proba)
        bits[:, t] = -np.log2(proba)
    return bits

"""Dunning's log-likelihood ratio exactly as Mahout computes it (UR-SPEC §2.5), over numpy arrays.

`llr(k11, k12, k21, k22)` is the textbook form. `llr_counts(k, a, b, n, table)` is the same
quantity for a co-occurrence count k of an item seen by a users with a target seen by b users out
of n, regrouped so that the entropy terms are table look-ups (k, a, b are integers <= n) and the
result is bit-identical when a and b are swapped. The trainer uses the second one: hundreds of
millions of pairs, no logarithm per pair.
"""

from __future__ import annotations

import numpy as np

_TABLE_LIMIT = 1 << 25  # beyond this many users the x·ln(x) table is computed per call


def xlogx(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    positive = x > 0
    out[positive] = x[positive] * np.log(x[positive])
    return out


def _entropy(*counts: np.ndarray) -> np.ndarray:
    """Mahout's un-normalised entropy: xlogx(sum) - sum(xlogx), summed in argument order."""
    total = counts[0].astype(np.float64)
    result = xlogx(counts[0])
    for c in counts[1:]:
        result = result + xlogx(c)
        total = total + c
    return xlogx(total) - result


def llr(k11, k12, k21, k22) -> np.ndarray:
    """LLR of 2x2 contingency tables; every count must be >= 0."""
    k11, k12, k21, k22 = (np.asarray(k, dtype=np.int64) for k in (k11, k12, k21, k22))
    if min(int(k.min(initial=0)) for k in (k11, k12, k21, k22)) < 0:
        raise ValueError("LLR counts must be non-negative")
    row = _entropy(k11 + k12, k21 + k22)
    column = _entropy(k11 + k21, k12 + k22)
    matrix = _entropy(k11, k12, k21, k22)
    value = 2.0 * (row + column - matrix)
    return np.where(row + column < matrix, 0.0, value)


def xlogx_table(n: int) -> np.ndarray | None:
    """x·ln(x) for x = 0..n, or None when n is too large to tabulate."""
    if n > _TABLE_LIMIT:
        return None
    return xlogx(np.arange(n + 1, dtype=np.float64))


def llr_counts(k, a, b, n, table: np.ndarray | None = None) -> np.ndarray:
    """LLR for k users doing both, a doing the first, b the second, n users in all.

    Equal to llr(k, a-k, b-k, n-a-b+k) up to floating-point round-off, with the terms paired so
    that swapping a and b gives the identical float. Negative round-off is clamped to 0.
    """
    k = np.asarray(k, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    if table is None and n.ndim == 0:
        table = xlogx_table(int(n))
    t_of = xlogx if table is None else table.__getitem__
    xn = xlogx(n)
    both = (t_of(k) + t_of(n - a - b + k)) + xn
    one = t_of(a - k) + t_of(b - k)
    margins = (t_of(a) + t_of(n - a)) + (t_of(b) + t_of(n - b))
    value = ((both + one) - margins) * 2.0
    return np.maximum(value, 0.0)

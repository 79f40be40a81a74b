"""Compiled loops the engine needs and numpy has no single call for (numba, cached on disk).

`scatter_add` adds one weight per posting list to the rows (documents, or classes of documents)
it lists, from index.Postings: 2-byte row offsets in blocks of 65,536 rows. scipy's csc_matvec
does the same from 4-byte rows but also reads a shared 1.0 (8 bytes) beside each; the loop is
memory-bound, so streaming 2 bytes a posting instead of 12 takes ~40 % less time
(loadtest/bench_engine). Each row gets its additions in the same order as before (values as
given, then rows ascending), so the sums have the same bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _scatter_add(
    bounds: np.ndarray, low: np.ndarray, values: np.ndarray, weights: np.ndarray, out: np.ndarray
) -> None:
    blocks = bounds.shape[1] - 1
    for j in range(len(values)):
        v, w = values[j], weights[j]
        for b in range(blocks):
            base = b << 16
            for p in range(bounds[v, b], bounds[v, b + 1]):
                out[base + low[p]] += w


def scatter_add(
    bounds: np.ndarray, low: np.ndarray, values: np.ndarray, weights: np.ndarray, out: np.ndarray
) -> None:
    """out[rows of value values[j]] += weights[j], for each j in order (index.Postings). The
    short arguments are made contiguous int64 / float64: one compiled signature for all."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    _scatter_add(bounds, low, values, np.ascontiguousarray(weights, dtype=np.float64), out)


def warm() -> None:
    """Compile (or load from the disk cache) the loop now, not in the first query: an index
    calls this while it is built (in the query service, off the event loop)."""
    bounds = np.zeros((1, 2), dtype=np.int64)
    scatter_add(bounds, np.zeros(1, np.uint16), np.zeros(1), np.ones(1), np.zeros(1))

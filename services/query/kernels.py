"""Compiled loops the engine needs and numpy has no single call for (numba, cached on disk).

`scatter_add` adds one weight per posting list to the documents (or classes) it lists. scipy's
csc_matvec does the same for int32 lists, but reads a shared 1.0 (8 bytes) beside each 4-byte
posting; here the postings of a dense indicator's classes are uint16 (at most 65,536 classes),
so a query streams 2 bytes a posting instead of 12: its costliest loop, memory-bound, takes ~40 %
less time (loadtest/bench_engine). The additions happen in the same order as csc_matvec's, so
the sums have the same bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _scatter_add(
    indptr: np.ndarray, rows: np.ndarray, values: np.ndarray, weights: np.ndarray, out: np.ndarray
) -> None:
    for j in range(len(values)):
        v, w = values[j], weights[j]
        for p in range(indptr[v], indptr[v + 1]):
            out[rows[p]] += w


def scatter_add(
    indptr: np.ndarray, rows: np.ndarray, values: np.ndarray, weights: np.ndarray, out: np.ndarray
) -> None:
    """out[rows[indptr[v]:indptr[v + 1]]] += weights[j] for each v = values[j], in that order.
    The short arguments are made contiguous int64 / float64: one compiled signature for all."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    _scatter_add(indptr, rows, values, np.ascontiguousarray(weights, dtype=np.float64), out)


def warm() -> None:
    """Compile (or load from the disk cache) the loop now, not in the first query: an index that
    will use it calls this while it is built (in the query service, off the event loop)."""
    indptr = np.array([0, 1], dtype=np.int32)  # Classes.indptr's type
    scatter_add(indptr, np.zeros(1, np.uint16), np.zeros(1), np.ones(1), np.zeros(1))

"""Compiled loops the engine needs and numpy has no single call for (numba, cached on disk).

- `scatter_add` adds one weight per posting list to the rows (documents, or classes of documents)
it lists, from index.Postings: 2-byte row offsets in blocks of 65,536 rows. scipy's csc_matvec
does the same from 4-byte rows but also reads a shared 1.0 (8 bytes) beside each; the loop is
memory-bound, so streaming 2 bytes a posting instead of 12 takes ~40 % less time
(loadtest/bench_engine). Each row gets its additions in the same order as before (values as
given, then rows ascending), so the sums have the same bits.
- `gather` copies each class's sum to its documents: np.take's loop with mode="clip" (its fast
  one) takes half as long again.
- `mask_scores` multiplies scores by a bool mask in place: numpy's `scores *= mask` converts the
  mask to float64 in buffered chunks first and takes three times as long.
- `at_least` finds the top-k's candidates (scoring.candidates) in the blocks of scores whose
  maximum reaches the floor, in one loop: numpy needed a fancy-indexed copy of those blocks, a
  comparison, index arithmetic and a concatenation. The whole candidates step on 210 Complete
  Journey user queries: 90 → 71 µs (73 → 56 in a second run). The block maxima stay numpy's:
  its vectorised max beats a compiled loop (23 against 40 µs).
- `find_ids` looks up many id strings in an index.Ids at once: each key's CRC-32, a binary search
  among the sorted CRCs, a byte-for-byte check of every id with that CRC. Numpy needed a call per
  step and a Python call per key for each of encoding, hashing and measuring (~0.2 µs a key);
  here the keys arrive as one joined buffer.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

HEAD_BITS = 12  # find_ids: where the CRCs of each value of their top 12 bits start (32 KB)


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


@njit(cache=True, nogil=True)
def _gather(values: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    for i in range(len(index)):
        out[i] = values[index[i]]
    for i in range(len(index), len(out)):
        out[i] = 0.0


def gather(values: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """out[i] = values[index[i]] for every i of index (in bounds), 0 for the rest of out: float64
    values and out, intp index."""
    _gather(values, index, out)


@njit(cache=True, nogil=True)
def _mask_scores(mask: np.ndarray, scores: np.ndarray) -> None:
    for i in range(len(scores)):
        scores[i] = scores[i] * mask[i]


def mask_scores(mask: np.ndarray, scores: np.ndarray) -> None:
    """scores *= mask (bool, as long as scores), in place; the same bits as numpy's."""
    _mask_scores(mask, scores)


@njit(cache=True, nogil=True)
def _at_least(scores: np.ndarray, tops: np.ndarray, size: int, low: float, out: np.ndarray) -> int:
    n = 0
    for b in range(len(tops)):
        if tops[b] >= low:
            for i in range(b * size, (b + 1) * size):
                if scores[i] >= low:
                    out[n] = i
                    n += 1
    for i in range(len(tops) * size, len(scores)):
        if scores[i] >= low:
            out[n] = i
            n += 1
    return n


def at_least(scores: np.ndarray, tops: np.ndarray, size: int, low: float) -> np.ndarray:
    """Ascending indices of the scores >= low, looking only in the blocks (of `size`, maxima
    `tops`) whose maximum reaches it, and in the tail after the blocks."""
    blocks = len(tops)
    room = int(np.count_nonzero(tops >= low)) * size + len(scores) - blocks * size
    out = np.empty(room, dtype=np.int64)
    return out[: _at_least(scores, tops, size, float(low), out)]


@njit(cache=True, nogil=True)
def _find_ids(
    table: np.ndarray,
    crcs: np.ndarray,
    heads: np.ndarray,
    perm: np.ndarray,
    data: np.ndarray,
    offsets: np.ndarray,
    keys: np.ndarray,
    starts: np.ndarray,
    out: np.ndarray,
) -> None:
    shift = 32 - HEAD_BITS
    for j in range(len(starts) - 1):
        a, b = starts[j], starts[j + 1]
        crc = np.int64(0xFFFFFFFF)
        for p in range(a, b):
            crc = table[(crc ^ keys[p]) & 0xFF] ^ (crc >> 8)
        crc ^= 0xFFFFFFFF
        head = crc >> shift  # the CRCs with the same leading bits: a few dozen at most
        low, high = heads[head], heads[head + 1]  # then the first of them >= crc
        while low < high:
            mid = (low + high) >> 1
            if crcs[mid] < crc:
                low = mid + 1
            else:
                high = mid
        out[j] = -1
        while low < len(crcs) and crcs[low] == crc:  # ids sharing a CRC: all checked
            i = perm[low]
            s = offsets[i]
            if offsets[i + 1] - s == b - a:
                q = 0
                while q < b - a and data[s + q] == keys[a + q]:
                    q += 1
                if q == b - a:
                    out[j] = i
                    break
            low += 1


class IdTable(NamedTuple):
    """An index.Ids as find_ids reads it: id i is data[offsets[i]:offsets[i + 1]]; crcs the ids'
    CRC-32s ascending and perm the id of each; heads[h] the first CRC whose top HEAD_BITS are h;
    table the CRC-32 byte table."""

    table: np.ndarray
    crcs: np.ndarray
    heads: np.ndarray
    perm: np.ndarray
    data: np.ndarray
    offsets: np.ndarray


def find_ids(ids: IdTable, keys: bytes, starts: np.ndarray) -> np.ndarray:
    """int64 index of each key (keys[starts[j]:starts[j + 1]]) among the ids, -1 if absent."""
    out = np.empty(len(starts) - 1, dtype=np.int64)
    _find_ids(*ids, np.frombuffer(keys, np.uint8), starts, out)
    return out


def warm() -> None:
    """Compile (or load from the disk cache) the loops now, not in the first query: an index
    calls this while it is built (in the query service, off the event loop)."""
    bounds = np.zeros((1, 2), dtype=np.int64)
    scatter_add(bounds, np.zeros(1, np.uint16), np.zeros(1), np.ones(1), np.zeros(1))
    gather(np.zeros(1), np.zeros(1, dtype=np.intp), np.zeros(2))
    shared = np.ones(1, dtype=bool)
    shared.flags.writeable = False  # as Documents.live gives it
    mask_scores(shared, np.zeros(1))
    mask_scores(np.ones(1, dtype=bool), np.zeros(1))
    at_least(np.zeros(2), np.zeros(1), 1, 0.0)
    none, data = np.zeros(0, dtype=np.int64), np.frombuffer(b"", dtype=np.uint8)  # read-only
    table, offsets = np.zeros(256, dtype=np.uint32), np.zeros(1, dtype=np.int64)
    heads = np.zeros((1 << HEAD_BITS) + 1, dtype=np.int64)
    ids = IdTable(table, none.astype(np.uint32), heads, none.astype(np.int32), data, offsets)
    find_ids(ids, b"", offsets)

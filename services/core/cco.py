"""Correlated cross-occurrence with LLR (UR-SPEC §2, crossrec's decisions), on integer codes.

Input: per indicator, (user code, target code) arrays; user codes are shared by all indicators,
target codes index each indicator's own vocabulary (0..n_targets-1; the trainer numbers them in
id order, so "code ascending" is "id ascending"). The first indicator is the primary one, P.

1. users U = users of P with at least minEventsPerUser raw P events (all of them if unset);
   other indicators' events of users outside U are dropped;
2. per indicator a binary |U| x n_targets CSR matrix, downsampled with its cap c: each cell kept
   with probability min(1, c/n_user, c/n_item) from a seeded numpy Generator;
3. C = P~' X~ in blocks of rows (primary items), spread over threads (scipy and numpy release the
   GIL); LLR on every non-zero from a table of x·ln(x); independent pairs (LLR exactly 0) and the
   diagonal of P'P dropped, minLLR applied;
4. top-k per row by LLR (float32, as stored) descending, then code ascending: a per-row histogram
   of the float32 bit patterns finds each long row's cut-off bucket, then one lexsort of the few
   survivors. No Python loop per pair or per row.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from crossrec.core.llr import xlogx_table

DEFAULT_SEED = 0xDEADBEEF  # Mahout's
BLOCK_FLOPS = 2_000_000  # multiply-adds per block of C: bounds each thread's temporary arrays
_BINS_SHIFT = 19  # float32 bits >> 19: 8 exponent + 4 mantissa bits, buckets 1/16 octave wide
_HIST_CELLS = 1 << 23


@dataclass(frozen=True, slots=True)
class IndicatorData:
    name: str
    users: np.ndarray  # int codes, shared user space
    targets: np.ndarray  # int codes into this indicator's vocabulary
    n_targets: int
    cap: int = 500  # downsampling cap (maxItemsPerUser / maxEventsPerEventType)
    top_k: int = 50  # maxCorrelatorsPerItem
    min_llr: float | None = None


@dataclass(frozen=True, slots=True)
class Correlation:
    """Rows are primary item codes; each row's target codes by LLR desc, then code asc."""

    name: str
    indptr: np.ndarray  # int64, n_items + 1
    indices: np.ndarray  # int32 target codes
    llr: np.ndarray  # float32
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CcoResult:
    n_users: int
    n_items: int
    correlations: dict[str, Correlation]
    warnings: tuple[str, ...]


def binary_matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A 0/1 CSR matrix with sorted indices; repeated (row, col) pairs count once."""
    keys = np.sort(rows.astype(np.int64) * shape[1] + cols.astype(np.int64))
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys
    r, c = np.divmod(keys, shape[1])
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=shape[0]), out=indptr[1:])
    data = np.ones(len(keys), dtype=np.int32)
    return sp.csr_matrix((data, c.astype(np.int32), indptr), shape=shape)


def downsample(m: sp.csr_matrix, cap: int, rng: np.random.Generator) -> sp.csr_matrix:
    """Keep each cell with probability min(1, cap/n_user, cap/n_item); heavy users are sampled."""
    per_user = np.diff(m.indptr)
    per_item = np.bincount(m.indices, minlength=m.shape[1])
    if m.nnz == 0 or (per_user.max() <= cap and per_item.max() <= cap):
        return m
    rate = np.minimum(cap / np.repeat(per_user, per_user), cap / per_item[m.indices])
    keep = rng.random(m.nnz) < np.minimum(rate, 1.0)
    user_of = np.repeat(np.arange(m.shape[0]), per_user)
    indptr = np.zeros(m.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_of[keep], minlength=m.shape[0]), out=indptr[1:])
    data = np.ones(int(keep.sum()), dtype=np.int32)
    return sp.csr_matrix((data, m.indices[keep], indptr), shape=m.shape)


def top_k_per_row(rows: np.ndarray, cols: np.ndarray, llr: np.ndarray, n_rows: int, k: int):
    """Entries grouped by row (rows non-decreasing, 0..n_rows-1) -> the k best of each row, sorted.

    Best = larger float32 LLR, then smaller col. Returns (rows, cols, llr) in output order.
    """
    llr = llr.astype(np.float32)
    counts = np.bincount(rows, minlength=n_rows)
    long_rows = np.flatnonzero(counts > k)
    if len(long_rows):
        keep = llr >= _cutoffs(rows, llr, counts, long_rows, k)[rows]
        rows, cols, llr = rows[keep], cols[keep], llr[keep]
    order = np.lexsort((cols, -llr, rows))
    rows, cols, llr = rows[order], cols[order], llr[order]
    counts = np.bincount(rows, minlength=n_rows)
    rank = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
    keep = rank < k
    return rows[keep], cols[keep], llr[keep]


def _cutoffs(rows, llr, counts, long_rows, k) -> np.ndarray:
    """Per row, a value at or below its k-th largest LLR (0 for rows with <= k entries).

    Positive float32 bit patterns sort like the floats; >> 19 puts them in buckets 1/16 of an
    octave wide. A histogram per long row (only over the buckets in use) locates the bucket
    holding the k-th largest; its lower edge is the cut-off.
    """
    bins = llr.view(np.int32) >> _BINS_SHIFT
    low = int(bins.min())
    width = int(bins.max()) - low + 1
    bins = bins - low
    cutoff = np.zeros(len(counts), dtype=np.float32)
    starts = np.concatenate(([0], np.cumsum(counts)))
    slot = np.full(len(counts), -1, dtype=np.int64)
    chunk = max(1, _HIST_CELLS // width)
    for first in range(0, len(long_rows), chunk):  # a loop over chunks of thousands of rows
        group = long_rows[first : first + chunk]
        lo, hi = starts[group[0]], starts[group[-1] + 1]  # a row's entries are one run
        slot[group] = np.arange(len(group))
        where = slot[rows[lo:hi]]
        mine = where >= 0
        hist = np.bincount(where[mine] * width + bins[lo:hi][mine], minlength=len(group) * width)
        from_top = hist.reshape(len(group), width)[:, ::-1].cumsum(axis=1)
        bucket = width - 1 - np.argmax(from_top >= k, axis=1) + low
        cutoff[group] = (bucket.astype(np.int32) << _BINS_SHIFT).view(np.float32)
        slot[group] = -1
    return cutoff


def _block(pt: sp.csr_matrix, x: sp.csr_matrix, lo: int, hi: int, ctx: dict):
    """Correlators of primary items lo..hi-1 against x: (rows, cols, llr, candidates)."""
    c = pt[lo:hi] @ x
    per_row = np.diff(c.indptr)
    cols, k, n, t = c.indices, c.data, ctx["n"], ctx["table"]
    a = np.repeat(ctx["a"][lo:hi], per_row)
    b = ctx["b"][cols]
    # llr_counts, inlined to reuse buffers; the same pairing of terms
    scratch = n - a
    scratch -= b
    scratch += k
    llr = t[k]
    llr += t[scratch]
    np.subtract(a, k, out=scratch)
    pair = t[scratch]
    np.subtract(b, k, out=scratch)
    pair += t[scratch]
    llr += ctx["xn"]
    llr += pair
    pair = np.repeat(ctx["margin_a"][lo:hi], per_row)
    pair += ctx["margin_b"][cols]
    llr -= pair
    llr *= 2.0
    rows = np.repeat(np.arange(hi - lo, dtype=np.int32), per_row)
    keep = llr > 0
    if ctx["self"]:
        keep &= cols != rows + lo
    if ctx["min_llr"] is not None:
        keep &= llr >= ctx["min_llr"]
    tiny = np.flatnonzero(keep & (llr < 1e-6))  # round-off of an independent pair (LLR exactly 0)?
    if len(tiny):
        kk, aa, bb = (v[tiny].astype(np.int64) for v in (k, a, b))
        keep[tiny[kk * (n - aa - bb + kk) == (aa - kk) * (bb - kk)]] = False
    rows, cols, llr = top_k_per_row(rows[keep], cols[keep], llr[keep], hi - lo, ctx["top_k"])
    return rows + lo, cols, llr, c.nnz


def _blocks(pt: sp.csr_matrix, x: sp.csr_matrix, block_flops: int) -> list[tuple[int, int]]:
    flops = np.cumsum(pt @ np.diff(x.indptr).astype(np.int64))
    if len(flops) == 0:
        return []
    marks = np.arange(block_flops, int(flops[-1]), block_flops)
    cuts = np.unique(
        np.concatenate(([0], np.searchsorted(flops, marks, side="left") + 1, [len(flops)]))
    )
    cuts = np.minimum(cuts, len(flops))
    return [(int(lo), int(hi)) for lo, hi in itertools.pairwise(cuts) if hi > lo]


def _empty(name: str, n_items: int, **stats) -> Correlation:
    return Correlation(
        name,
        np.zeros(n_items + 1, dtype=np.int64),
        np.zeros(0, dtype=np.int32),
        np.zeros(0, dtype=np.float32),
        dict(stats),
    )


def compute(
    indicators: Sequence[IndicatorData],
    *,
    min_events_per_user: int | None = None,
    seed: int | None = None,
    threads: int | None = None,
    block_flops: int = BLOCK_FLOPS,
) -> CcoResult:
    """Correlators of every indicator; indicators[0] is the primary one."""
    primary = indicators[0]
    n_items = primary.n_targets
    warnings: list[str] = []
    user_space = 1 + max((int(d.users.max()) for d in indicators if len(d.users)), default=-1)
    raw = np.bincount(primary.users, minlength=user_space)
    in_u = raw >= max(1, min_events_per_user or 1)
    row_of = np.full(user_space, -1, dtype=np.int64)
    n_users = int(in_u.sum())
    row_of[in_u] = np.arange(n_users)
    if len(primary.users) == 0:
        warnings.append(f"indicator {primary.name!r} (primary) has no events: no correlators")

    seed = DEFAULT_SEED if seed is None else seed
    sampled: dict[str, sp.csr_matrix] = {}
    stats: dict[str, dict] = {}
    for position, d in enumerate(indicators):
        stats[d.name] = {"events": len(d.users), "targets": d.n_targets}
        if len(d.users) == 0:
            if position:
                warnings.append(f"indicator {d.name!r} has no events: skipped")
            continue
        rows = row_of[d.users]
        kept = rows >= 0
        m = binary_matrix(rows[kept], d.targets[kept], (n_users, d.n_targets))
        rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, position])
        sampled[d.name] = downsample(m, d.cap, rng)
        stats[d.name].update(
            users=int(np.count_nonzero(np.diff(m.indptr))), pairs=m.nnz, sampled=sampled[d.name].nnz
        )

    correlations = {d.name: _empty(d.name, n_items, **stats[d.name]) for d in indicators}
    p = sampled.get(primary.name)
    if p is None or n_users == 0:
        return CcoResult(n_users, n_items, correlations, tuple(warnings))
    pt = p.T.tocsr()
    count_type = np.int32 if n_users < 2**30 else np.int64
    a = np.bincount(p.indices, minlength=n_items).astype(count_type)
    table = xlogx_table(n_users)
    if table is None:
        raise ValueError(f"{n_users} users: more than the x·ln(x) table allows")
    tasks = []
    for d in indicators:
        x = sampled.get(d.name)
        if x is None:
            continue
        b = np.bincount(x.indices, minlength=d.n_targets).astype(count_type)
        ctx = {
            "a": a,
            "b": b,
            "n": n_users,
            "table": table,
            "xn": float(table[n_users]),
            "margin_a": table[a] + table[n_users - a],
            "margin_b": table[b] + table[n_users - b],
            "self": d.name == primary.name,
            "min_llr": d.min_llr,
            "top_k": d.top_k,
        }
        tasks += [(d.name, x, lo, hi, ctx) for lo, hi in _blocks(pt, x, block_flops)]
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        results = list(pool.map(lambda t: (t[0], _block(pt, t[1], t[2], t[3], t[4])), tasks))
    for d in indicators:
        parts = [r for name, r in results if name == d.name]
        if not parts:
            continue
        rows = np.concatenate([r[0] for r in parts])
        indptr = np.zeros(n_items + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_items), out=indptr[1:])
        indices = np.concatenate([r[1] for r in parts]).astype(np.int32)
        llr = np.concatenate([r[2] for r in parts]).astype(np.float32)
        s = dict(stats[d.name], candidates=sum(r[3] for r in parts), correlators=len(indices))
        correlations[d.name] = Correlation(d.name, indptr, indices, llr, s)
    return CcoResult(n_users, n_items, correlations, tuple(warnings))

"""Scoring a bool query over the indexes (UR-SPEC §5.6) and picking one page in the total order.

score(d) = Σ_boosting clauses bias · Σ_{v ∈ values ∩ d[f]} idf_f(v). A clause's (value, weight)
pairs on an indicator field are accumulated straight from the posting arrays, without copying
them: a compiled loop (kernels.scatter_add) adds weight(v) to every row of each value's postings,
values in descending order, 2 bytes read a posting (index.Postings). Property and `id` postings,
with a weight each, go through scipy's csc_matvec. Scores are rounded to 9 decimals (sums of the
same terms in another order tie exactly).

A dense indicator (few values, each held by thousands of documents, as categories) dominates:
~500k postings a query on The Complete Journey. Documents with the same correlator set share
a class (index.Classes: a third fewer postings there); the lead indicator's sum is made per
class when that touches fewer postings, then copied to the documents (kernels.gather). Score
buffers are reused (Scratch) instead of allocated per query.

The page needs only the best `from + num` documents: a threshold (the k-th highest of the maxima
of 4k blocks of documents) leaves a few candidates, found in the few blocks that reach it, sorted by np.lexsort on
(score, rankings in configured order, id rank); zero-score documents come from the precomputed
backfill order, read in growing chunks until the page is full.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from crossrec.query.index import IndicatorIndex
from crossrec.query.kernels import at_least, gather, mask_scores, scatter_add

try:  # the C loop behind scipy.sparse's matrix-vector product; np.add.at as a fallback
    from scipy.sparse._sparsetools import csc_matvec
except ImportError:  # pragma: no cover - scipy moved it
    csc_matvec = None

DECIMALS = 9
MARGIN = 1e-9  # raw scores this close may round to the same value
NONE = np.zeros(0, dtype=np.int64)
SORT_LIMIT = 2048  # more candidates than this: find the k-th best score first
GATHER = 0.5  # cost of copying a class's score to a document, in postings


class Filter(NamedTuple):
    """Candidates: `mask` (None: every document) minus `excluded` (document indices, maybe
    repeated: only the backfill needs them as a set)."""

    mask: np.ndarray | None
    excluded: np.ndarray

    def apply(self, scores: np.ndarray) -> None:
        """Zero the scores of documents that are not candidates."""
        if self.mask is not None:
            mask_scores(self.mask, scores)
        scores[self.excluded] = 0

    def passes(self, docs: np.ndarray) -> np.ndarray:
        ok = np.ones(len(docs), dtype=bool) if self.mask is None else self.mask[docs]
        if len(self.excluded):
            ok &= ~np.isin(docs, self.excluded)
        return ok


class Plan:
    """The bool query: boosting terms and postings, filters (must) and exclusions (must_not)."""

    def __init__(self) -> None:
        # boosting clauses: per indicator (vocabulary indices, weights); elsewhere (documents,
        # weights per posting)
        self.terms: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.postings: list[tuple[np.ndarray, np.ndarray]] = []
        self.must: list[np.ndarray] = []
        self.must_not: list[np.ndarray] = []

    def __bool__(self) -> bool:
        return bool(self.terms or self.postings)

    def indicator(self, k: int, ind: IndicatorIndex, values: np.ndarray, bias: float) -> None:
        """A clause on indicator k: distinct vocabulary indices, boosted (> 0) or a filter (< 0)."""
        if bias > 0 and len(values):
            self.terms.setdefault(k, []).append((values, ind.idf[values] * bias))
        elif bias < 0:
            self.must.append(ind.documents(values))

    def field(self, postings: tuple[np.ndarray, np.ndarray], bias: float) -> None:
        """A clause on a property or `id`: (documents, idf per posting)."""
        if bias > 0 and len(postings[0]):
            self.postings.append((postings[0], postings[1] * bias))
        elif bias < 0:
            self.must.append(postings[0])


class Scratch:
    """Reusable float64 buffers, so that a query does not allocate (and fault in) ~N·8 bytes of
    fresh memory each time. A buffer is held by one query at a time: safe on threads too."""

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, n: int) -> np.ndarray:
        with self._lock:
            fits = [k for k, b in enumerate(self._free) if len(b) >= n]
            if fits:
                return self._free.pop(fits[-1])[:n]
        return np.empty(n)

    def zeros(self, n: int) -> np.ndarray:
        out = self.empty(n)
        out.fill(0)
        return out

    def give(self, *arrays: np.ndarray) -> None:
        with self._lock:
            self._free.extend(a if a.base is None else a.base for a in arrays)


def _sorted(terms: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One indicator's clauses as (values, weights), values descending."""
    if len(terms) == 1:  # distinct ascending values (a lookup's np.unique): reversed is sorted
        values, weights = terms[0]
        if (values[1:] > values[:-1]).all():
            return values[::-1], weights[::-1]
    else:
        values = np.concatenate([v for v, _ in terms])
        weights = np.concatenate([w for _, w in terms])
    order = np.argsort(-values, kind="stable")
    return values[order], weights[order]


def _grouped(ind: IndicatorIndex, values: np.ndarray) -> bool:
    """Whether summing per class of documents touches fewer postings (copies included)."""
    classes = ind.classes
    if classes is None:
        return False
    return int(classes.saved[values].sum()) > GATHER * len(classes.of)


def accumulate(
    plan: Plan, indicators: list[IndicatorIndex], n: int, scratch: Scratch
) -> np.ndarray:
    """float64 score per document (unrounded), in a buffer of `scratch` (to give back).

    The lead indicator (the one with the fewest values, the densest: its part is the costliest)
    is summed on its own, from 0 in descending value order; then every other indicator's
    postings are added one by one, in clause order and descending value order, then the
    property and `id` postings. The lead's sum has the same bits whether it is made per
    document or per class of documents (whichever touches fewer postings), so a document's
    score is the same here and in the sharded tier's workers (which hold other classes)."""
    order = sorted(plan.terms, key=lambda k: len(indicators[k].idf))[:1]
    order += [k for k in plan.terms if k not in order]
    scores = None
    for k in order:
        ind = indicators[k]
        values, weights = _sorted(plan.terms[k])
        if scores is None and _grouped(ind, values):
            classes = ind.classes
            assert classes is not None
            sums = scratch.zeros(classes.count)
            scatter_add(*classes.postings, values, weights, sums)
            scores = scratch.empty(n)
            gather(sums, classes.of, scores)  # documents added after training: 0
            scratch.give(sums)
            continue
        if scores is None:
            scores = scratch.zeros(n)
        scatter_add(*ind.postings, values, weights, scores)
    if scores is None:
        scores = scratch.zeros(n)
    if plan.postings:
        docs = np.concatenate([d for d, _ in plan.postings]).astype(np.int32, copy=False)
        weights = np.concatenate([w for _, w in plan.postings])
        if csc_matvec is None:
            np.add.at(scores, docs, weights)
        else:
            bounds = np.array([0, len(docs)], dtype=np.int32)
            csc_matvec(len(scores), 1, bounds, docs, weights, np.ones(1), scores)
    return scores


def candidates(scores: np.ndarray, k: int) -> np.ndarray:
    """Ascending documents that may be among the k best (all those with a positive score unless
    a floor is found): those scoring at least the k-th highest of the maxima of 4k blocks of
    documents (k different documents score at least that much), less MARGIN. Only the blocks
    whose maximum reaches it are scanned (about k of them), not every score."""
    blocks = 4 * k
    size = len(scores) // blocks
    if size < 16:
        return np.flatnonzero(scores)
    tops = scores[: blocks * size].reshape(blocks, size).max(axis=1)
    positive = tops[tops > 0]
    if len(positive) < k:
        return np.flatnonzero(scores)
    low = np.sort(positive)[-k] - MARGIN
    return at_least(scores, tops, size, low)


def best(
    scores: np.ndarray, k: int, id_rank: np.ndarray, rank_keys: list[np.ndarray], order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The k best documents with a positive (rounded) score, in the total order; their scores."""
    found = candidates(scores, k)
    rounded = np.round(scores[found], DECIMALS)
    positive = rounded > 0
    found, rounded = found[positive], rounded[positive]
    tied = NONE
    if len(found) > max(SORT_LIMIT, k):  # many candidates: cut at the k-th best score
        kth = np.sort(rounded)[-k]
        ties = rounded == kth
        if np.count_nonzero(ties) > SORT_LIMIT:  # ties are in the backfill order
            need = k - int(np.count_nonzero(rounded > kth))
            tied = _in_order(order, lambda chunk: np.round(scores[chunk], DECIMALS) == kth, need)
            keep = rounded > kth
        else:
            keep = rounded >= kth
        found, rounded = found[keep], rounded[keep]
    top = _in_total_order(found, rounded, id_rank, rank_keys)[:k]
    found, rounded = found[top].astype(np.int64), rounded[top]
    if len(tied):
        found = np.concatenate([found, tied])
        rounded = np.concatenate([rounded, np.round(scores[tied], DECIMALS)])
    return found, rounded


def _in_total_order(
    found: np.ndarray, rounded: np.ndarray, id_rank: np.ndarray, rank_keys: list[np.ndarray]
) -> np.ndarray:
    """Positions of `found` (rounded scores `rounded`) in the total order: score desc, then each
    ranking in configured order, then id."""
    return np.lexsort([id_rank[found], *(key[found] for key in reversed(rank_keys)), -rounded])


class Shortlist(NamedTuple):
    """The best documents of a history's scores in the total order, before any filter of the
    query's own (its history's blacklist applied), with their rounded scores. The engine keeps
    one in a cached history's memo: its next queries read their page from it instead of
    scoring every document again. `complete`: every document with a positive score is here."""

    docs: np.ndarray
    rounded: np.ndarray
    complete: bool

    @classmethod
    def of(
        cls,
        scores: np.ndarray,
        size: int,
        id_rank: np.ndarray,
        rank_keys: list[np.ndarray],
        order: np.ndarray,
    ) -> Shortlist:
        docs, rounded = best(scores, size, id_rank, rank_keys, order)
        return cls(docs, rounded, len(docs) < size)

    def page(
        self, where: Filter, k: int, id_rank: np.ndarray, rank_keys: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """best() of the scores filtered by `where`, from the shortlist alone; None when it cannot
        tell. Every document outside scores at most the shortlist's least score, so the
        candidates scoring above it come first in the total order whatever lies outside: enough
        of them (k) make the page; fewer, only if the shortlist is complete."""
        ok = where.passes(self.docs)
        if not self.complete:
            ok &= self.rounded > self.rounded.min()
            if np.count_nonzero(ok) < k:
                return None
        found, rounded = self.docs[ok], self.rounded[ok]
        top = _in_total_order(found, rounded, id_rank, rank_keys)[:k]
        return found[top], rounded[top]


def _in_order(order: np.ndarray, wanted: Callable[[np.ndarray], np.ndarray], k: int) -> np.ndarray:
    """The first k documents of `order` for which `wanted` holds, reading growing chunks."""
    found, start, size = [], 0, max(64, 4 * k)
    while k > 0 and start < len(order):
        chunk = order[start : start + size]
        found.append(chunk[wanted(chunk)][:k])
        k -= len(found[-1])
        start, size = start + size, size * 4
    return np.concatenate(found).astype(np.int64) if found else NONE


def backfill(order: np.ndarray, where: Filter, scores: np.ndarray | None, k: int) -> np.ndarray:
    """The first k candidates with score 0, in the backfill order."""

    def zero(chunk: np.ndarray) -> np.ndarray:
        ok = where.passes(chunk)
        if scores is not None:
            ok &= np.round(scores[chunk], DECIMALS) <= 0
        return ok

    return _in_order(order, zero, k)

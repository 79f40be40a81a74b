"""Baselines on the same split, the same candidates and the same k as crossrec.

Each baseline learns from the primary indicator before T only (users × catalogue, event counts)
and scores every catalogue item for each test user; the items excluded for that user by the
candidate rules (EvalData.seen) are removed, and the k best remain (equal scores: item id
ascending).

- popularity: primary events per item before T (the UR's default `popular` ranking);
- item-kNN: cosine similarity between items' user vectors (binary), each item's `neighbours`
  most similar items kept (implicit's CosineRecommender), score = Σ similarity to the user's items;
- ALS: implicit's AlternatingLeastSquares (CPU) on BM25-weighted counts, score = user · item
  factors.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from crossrec.eval.split import EvalData

BATCH = 512  # users scored at once (a dense batch × catalogue block of float32)

Scorer = Callable[[np.ndarray], np.ndarray]  # test-user positions -> dense scores (b × catalogue)


@dataclass(frozen=True)
class BaselineParams:
    neighbours: int = 100
    factors: int = 64
    iterations: int = 15
    regularization: float = 0.05
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    seed: int = 0


def top_k(scores: np.ndarray, excluded: sp.csr_matrix, k: int) -> np.ndarray:
    """Per row, the k best columns not excluded (−1 where fewer remain); ties: column ascending."""
    scores = np.array(scores, dtype=np.float64)
    rows = np.repeat(np.arange(excluded.shape[0]), np.diff(excluded.indptr))
    cols = excluded.indices
    inside = cols < scores.shape[1]
    scores[rows[inside], cols[inside]] = -np.inf
    k_eff = min(k, scores.shape[1])
    if k_eff == 0:
        return np.full((scores.shape[0], k), -1, dtype=np.int64)
    kth = -np.partition(-scores, k_eff - 1, axis=1)[:, k_eff - 1]
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    for r, row in enumerate(scores):
        # everything above the k-th best score, then the lowest columns that equal it
        above = np.flatnonzero(row > kth[r])
        tied = np.flatnonzero(row == kth[r])[: k_eff - len(above)]
        cand = np.concatenate([above, tied])
        cand = cand[np.lexsort((cand, -row[cand]))]
        cand = cand[np.isfinite(row[cand])]
        out[r, : len(cand)] = cand
    return out


def _batches(n: int) -> Iterator[np.ndarray]:
    for start in range(0, n, BATCH):
        yield np.arange(start, min(n, start + BATCH))


def recommend(
    data: EvalData, score: Scorer, k: int, advance: Callable[[int], None] | None = None
) -> np.ndarray:
    out = np.full((len(data.users), k), -1, dtype=np.int64)
    for rows in _batches(len(data.users)):
        out[rows] = top_k(score(rows), data.seen[rows], k)
        if advance:
            advance(len(rows))
    return out


def popularity(data: EvalData, params: BaselineParams) -> Scorer:
    counts = data.items.counts.astype(np.float64)
    return lambda rows: np.broadcast_to(counts, (len(rows), len(counts)))


def item_knn(data: EvalData, params: BaselineParams) -> Scorer:
    from implicit.nearest_neighbours import CosineRecommender
    from implicit.utils import ParameterWarning

    binary = data.train_matrix.copy()
    binary.data[:] = 1
    knn = CosineRecommender(K=params.neighbours + 1)  # + the item itself, removed below
    with warnings.catch_warnings():  # its own normalisation hands its kernel a COO matrix
        warnings.simplefilter("ignore", ParameterWarning)
        knn.fit(binary, show_progress=False)
    similarity = sp.csr_matrix(knn.similarity)
    similarity.setdiag(0)
    similarity.eliminate_zeros()
    users = binary[data.train_rows]
    return lambda rows: (users[rows] @ similarity).toarray()


def als(data: EvalData, params: BaselineParams) -> Scorer:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import bm25_weight

    weighted = bm25_weight(data.train_matrix, K1=params.bm25_k1, B=params.bm25_b)
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            iterations=params.iterations,
            random_state=params.seed,
        )
        model.fit(sp.csr_matrix(weighted, dtype=np.float32), show_progress=False)
    users = np.asarray(model.user_factors)[data.train_rows]
    items = np.asarray(model.item_factors)
    return lambda rows: users[rows] @ items.T


BASELINES: dict[str, Callable[[EvalData, BaselineParams], Scorer]] = {
    "popularity": popularity,
    "item-kNN": item_knn,
    "ALS": als,
}

"""Offline-evaluation metrics against hand-computed cases, and the bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from crossrec.eval.metrics import (
    Bootstrap,
    coverage,
    hit_matrix,
    popularity,
    popularity_percentile,
    ranking_metrics,
)

L2, L3, L4 = 1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(5)


def relevant(rows: list[list[int]], n_items: int = 10) -> sp.csr_matrix:
    r = [i for i, items in enumerate(rows) for _ in items]
    c = [j for items in rows for j in items]
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


def metrics_of(recs: list[list[int]], truth: list[list[int]], k: int) -> dict[str, np.ndarray]:
    rel = relevant(truth)
    hits = hit_matrix(np.array(recs), rel)
    return ranking_metrics(hits, np.diff(rel.indptr), k)


def test_hand_computed_user():
    # recommended 3, 1, 7, 5; relevant {1, 5, 9}: hits at ranks 2 and 4
    m = metrics_of([[3, 1, 7, 5]], [[1, 5, 9]], k=4)
    assert m["precision"][0] == pytest.approx(2 / 4)
    assert m["recall"][0] == pytest.approx(2 / 3)
    assert m["map"][0] == pytest.approx((1 / 2 + 2 / 4) / 3)  # min(k, R) = 3
    assert m["ndcg"][0] == pytest.approx((L2 + L4) / (1 + L2 + L3))


def test_cut_at_k():
    m = metrics_of([[3, 1, 7, 5]], [[1, 5, 9]], k=2)
    assert m["precision"][0] == pytest.approx(1 / 2)
    assert m["recall"][0] == pytest.approx(1 / 3)
    assert m["map"][0] == pytest.approx((1 / 2) / 2)  # min(k, R) = 2
    assert m["ndcg"][0] == pytest.approx(L2 / (1 + L2))


def test_perfect_and_empty_lists():
    m = metrics_of([[1, 2], [-1, -1]], [[1, 2], [4]], k=2)
    assert [m[x][0] for x in ("precision", "recall", "map", "ndcg")] == [1.0, 1.0, 1.0, 1.0]
    assert [m[x][1] for x in ("precision", "recall", "map", "ndcg")] == [0.0, 0.0, 0.0, 0.0]


def test_user_without_relevant_items_is_not_scored():
    m = metrics_of([[1, 2], [1, 2]], [[1], []], k=2)
    for name, values in m.items():
        assert math.isnan(values[1]), name
        assert not math.isnan(values[0])
    assert np.nanmean(m["recall"]) == 1.0


def test_k_larger_than_the_list():
    # a list of 2 (hit at rank 1) asked at k = 5; 2 relevant items
    m = metrics_of([[4, 8]], [[4, 6]], k=5)
    assert m["precision"][0] == pytest.approx(1 / 5)  # empty slots are misses
    assert m["recall"][0] == pytest.approx(1 / 2)
    assert m["map"][0] == pytest.approx(1 / 2)  # (1/1) / min(5, 2)
    assert m["ndcg"][0] == pytest.approx(1 / (1 + L2))


def test_k_larger_than_the_relevant_set():
    m = metrics_of([[0, 4, 5, 6]], [[5]], k=4)
    assert m["map"][0] == pytest.approx(1 / 3)  # precision@3 / min(4, 1)
    assert m["ndcg"][0] == pytest.approx(L3)  # hit at rank 3; ideal: one hit at rank 1


def test_hits_are_per_user_and_ignore_padding():
    rel = relevant([[1], [2]], n_items=3)
    hits = hit_matrix(np.array([[2, 1, -1], [1, -1, 2]]), rel)
    assert hits.tolist() == [[False, True, False], [False, False, True]]


def test_k_must_be_positive():
    with pytest.raises(ValueError):
        ranking_metrics(np.zeros((1, 1), dtype=bool), np.ones(1), 0)


def test_coverage_counts_catalogue_items_in_the_top_k():
    recs = np.array([[0, 1, 5], [0, 2, -1]])
    assert coverage(recs, 2, n_catalogue=4) == pytest.approx(3 / 4)  # {0, 1, 2}
    assert coverage(recs, 3, n_catalogue=4) == pytest.approx(3 / 4)  # 5 is not in it


def test_popularity_percentile_and_bias():
    pct = popularity_percentile(np.array([10, 1, 1, 5]))
    assert pct.tolist() == pytest.approx([1.0, 0.375, 0.375, 0.75])  # ties share ranks 1 and 2
    per_user = popularity(np.array([[0, 3], [1, -1], [-1, -1], [0, 9]]), 2, pct)
    assert per_user[:2].tolist() == pytest.approx([0.875, 0.375])
    assert math.isnan(per_user[2])
    assert per_user[3] == pytest.approx(0.5)  # outside the catalogue counts as 0


def test_bootstrap_interval_contains_the_mean_and_is_seeded():
    values = np.random.default_rng(1).random(500)
    a, b = (
        Bootstrap(500, 400, seed=3).interval(values),
        Bootstrap(500, 400, seed=3).interval(values),
    )
    assert a == b
    assert a.low < a.mean < a.high
    assert a.mean == pytest.approx(values.mean())
    assert a.high - a.low == pytest.approx(2 * 1.96 * values.std() / math.sqrt(500), rel=0.2)


def test_bootstrap_difference_ratio_and_missing_values():
    boot = Bootstrap(4, 200, seed=0)
    x = np.array([1.0, 2.0, 3.0, np.nan])
    same = boot.difference(x, x)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    assert boot.interval(x).mean == pytest.approx(2.0)
    lift = boot.ratio(2 * x, x)
    assert (lift.mean, lift.low, lift.high) == pytest.approx((1.0, 1.0, 1.0))
    constant = boot.interval(np.full(4, 0.5))
    assert (constant.low, constant.high) == pytest.approx((0.5, 0.5))

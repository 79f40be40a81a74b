"""Ranking metrics per user, catalogue-level statistics and bootstrap confidence intervals.

Recommendations are an int matrix, one row per user, best first, padded with -1 (a list shorter
than k simply has no hits in its empty slots). Relevance is a sparse users × items matrix. For a
user with R relevant items and hits h_1..h_k (h_i = 1 when the i-th recommendation is relevant):

    precision@k = Σ h_i / k                      (k, not the list length: missing slots are misses)
    recall@k    = Σ h_i / R
    AP@k        = Σ_i h_i · precision@i / min(k, R)       MAP@k = mean over users
    NDCG@k      = Σ_i h_i / log2(i + 1)  /  Σ_{i ≤ min(k, R)} 1 / log2(i + 1)

A user without relevant items (R = 0) cannot be scored: every metric is NaN for that user and
averages skip it. Bootstrap intervals resample users with replacement; all quantities of one run
share the same resamples, so differences between models are paired.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

METRICS = ("precision", "recall", "map", "ndcg")


def hit_matrix(recs: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """bool (users × list length): is each recommended item relevant to its user?"""
    n_users, n_items = relevant.shape
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(relevant.indptr))
    truth = rows * n_items + relevant.indices.astype(np.int64)
    keys = np.arange(n_users, dtype=np.int64)[:, None] * n_items + recs.astype(np.int64)
    return np.isin(keys, truth) & (recs >= 0)


def ranking_metrics(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per user: precision, recall, map (AP) and ndcg at k, NaN where n_relevant is 0."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    h = np.zeros((hits.shape[0], k), dtype=np.float64)
    width = min(k, hits.shape[1])
    h[:, :width] = hits[:, :width]
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    valid = n_rel > 0
    safe = np.where(valid, n_rel, 1.0)
    rank = np.arange(1, k + 1, dtype=np.float64)
    found = h.sum(axis=1)
    precision_at = np.cumsum(h, axis=1) / rank
    discount = 1.0 / np.log2(rank + 1.0)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(k, safe).astype(np.int64)]
    out = {
        "precision": found / k,
        "recall": found / safe,
        "map": (precision_at * h).sum(axis=1) / np.minimum(k, safe),
        "ndcg": (h * discount).sum(axis=1) / ideal,
    }
    return {name: np.where(valid, values, np.nan) for name, values in out.items()}


def coverage(recs: np.ndarray, k: int, n_catalogue: int) -> float:
    """Share of the catalogue (item codes 0..n_catalogue-1) recommended to at least one user."""
    top = recs[:, :k]
    shown = np.unique(top[(top >= 0) & (top < n_catalogue)])
    return len(shown) / n_catalogue if n_catalogue else 0.0


def popularity_percentile(counts: np.ndarray) -> np.ndarray:
    """Per item, the share of items at most as popular (ties share their average rank), in (0, 1]."""
    if not len(counts):
        return np.zeros(0)
    order = np.sort(counts)
    below = np.searchsorted(order, counts, side="left")
    upto = np.searchsorted(order, counts, side="right")
    return (below + upto + 1) / (2.0 * len(counts))


def popularity(recs: np.ndarray, k: int, percentile: np.ndarray) -> np.ndarray:
    """Per user, the mean popularity percentile of its top k (NaN without recommendations);
    items outside the catalogue count as 0."""
    top = recs[:, :k]
    inside = (top >= 0) & (top < len(percentile))
    values = np.where(inside, percentile[np.clip(top, 0, max(len(percentile) - 1, 0))], 0.0)
    shown = (top >= 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(shown > 0, (values * (top >= 0)).sum(axis=1) / shown, np.nan)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


class Bootstrap:
    """Resamples of users, as multiplicity weights: the mean of each resample is one matrix product."""

    def __init__(self, n_users: int, resamples: int = 1000, seed: int = 0, level: float = 0.95):
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, n_users, size=(resamples, n_users)) if n_users else None
        self.weights = (
            np.stack([np.bincount(d, minlength=n_users) for d in draws]).astype(np.float64)
            if draws is not None
            else np.zeros((resamples, 0))
        )
        self.tails = (100 * (1 - level) / 2, 100 * (1 + level) / 2)

    def means(self, values: np.ndarray) -> np.ndarray:
        """The resampled means of per-user values (NaN entries left out of each mean)."""
        valid = ~np.isnan(values)
        if valid.all():
            return self.weights @ values / len(values)
        total = self.weights @ np.where(valid, values, 0.0)
        count = self.weights @ valid.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / count

    def interval(self, values: np.ndarray) -> Interval:
        point = float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")
        return self._summary(point, self.means(values))

    def difference(self, a: np.ndarray, b: np.ndarray) -> Interval:
        """mean(a) − mean(b) for paired per-user values."""
        return self.interval(a - b)

    def ratio(self, a: np.ndarray, b: np.ndarray) -> Interval:
        """mean(a) / mean(b) − 1, the relative change (lift) of a over b."""
        keep = ~(np.isnan(a) | np.isnan(b))
        a, b = np.where(keep, a, np.nan), np.where(keep, b, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            point = float(np.nanmean(a) / np.nanmean(b) - 1) if keep.any() else float("nan")
            return self._summary(point, self.means(a) / self.means(b) - 1)

    def _summary(self, point: float, resampled: np.ndarray) -> Interval:
        finite = resampled[np.isfinite(resampled)]
        if not len(finite):
            return Interval(point, float("nan"), float("nan"))
        low, high = np.percentile(finite, self.tails)
        return Interval(point, float(low), float(high))

"""Baselines: the shared top-k with the candidate rules, and each model on a tiny split."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from crossrec.core.config import parse_engine_config
from crossrec.core.events import parse_time
from crossrec.eval.baselines import BASELINES, BaselineParams, recommend, top_k
from crossrec.eval.split import SplitSpec, prepare
from crossrec.trainer.data import from_columns

DAY = 86_400_000
T0 = parse_time("2024-01-01T00:00:00Z")
CONFIG = parse_engine_config(
    {
        "datasource": {"params": {"appName": "a"}},
        "algorithms": [{"name": "ur", "params": {"eventNames": ["buy"]}}],
    }
)


def test_top_k_excludes_and_breaks_ties_by_item():
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0]])
    excluded = sp.csr_matrix(([1, 1, 1], ([0, 1, 1], [1, 0, 7])), shape=(2, 8))
    assert top_k(scores, excluded, 3).tolist() == [[0, 2, 3], [1, 2, 3]]


def test_top_k_pads_when_few_candidates_remain():
    scores = np.array([[3.0, 2.0, 1.0]])
    excluded = sp.csr_matrix(([1, 1], ([0, 0], [0, 2])), shape=(1, 3))
    assert top_k(scores, excluded, 4).tolist() == [[1, -1, -1, -1]]


def split():
    """Two tastes: users 0-5 buy from {a, b, c}, users 6-11 from {x, y, z}; a and x are the
    most popular. After T each user buys the item of their taste they have not bought."""
    rows = []
    for u in range(12):
        group = ["a", "b", "c"] if u < 6 else ["x", "y", "z"]
        rows.append((f"u{u}", group[0], 0))
        rows.append((f"u{u}", group[1 + u % 2], 1))
        rows.append((f"u{u}", group[2 - u % 2], 9))
    rows.append(("extra", "a", 2))
    rows.append(("extra", "x", 2))
    rows.append(("extra2", "a", 2))
    user, target, day = zip(*rows, strict=True)
    events = from_columns(
        {
            "event": ["buy"] * len(rows),
            "user": user,
            "target": target,
            "time": T0 + np.array(day) * DAY,
        }
    )
    return prepare(events, {}, CONFIG, SplitSpec(fraction=0.5))


def test_popularity_recommends_the_most_bought_unseen_items():
    data = split()
    recs = recommend(data, BASELINES["popularity"](data, BaselineParams()), 2)
    names = [[data.items.ids[i] for i in row] for row in recs]
    assert names[0] == ["x", "c"]  # a is bought; x (3 + 6 users) beats the rest; then c by id
    assert all(data.items.ids[i] not in {"a"} for i in recs[:6, 0])


def test_item_knn_follows_the_taste():
    data = split()
    recs = recommend(data, BASELINES["item-kNN"](data, BaselineParams(neighbours=5)), 1)
    first = [data.items.ids[i] for i in recs[:, 0]]
    assert first == [["c", "b"][u % 2] if u < 6 else ["z", "y"][u % 2] for u in range(12)]


def test_als_recommends_within_the_taste_and_never_a_seen_item():
    rng = np.random.default_rng(7)
    rows = []
    for u in range(60):
        group = [f"{'AB'[u % 2]}{i}" for i in range(6)]
        for day, item in enumerate(rng.permutation(group)[:4]):
            rows.append((f"u{u}", item, day if day < 3 else 9))
    user, target, day = zip(*rows, strict=True)
    events = from_columns(
        {
            "event": ["buy"] * len(rows),
            "user": user,
            "target": target,
            "time": T0 + np.array(day) * DAY,
        }
    )
    data = prepare(events, {}, CONFIG, SplitSpec(fraction=0.5))
    recs = recommend(data, BASELINES["ALS"](data, BaselineParams(factors=8, iterations=15)), 3)
    groups = np.array(["AB"[int(user[1:]) % 2] for user in data.users])
    found = np.array([[data.items.ids[i][0] for i in row] for row in recs])
    assert (found[:, 0] == groups).all()
    seen = data.seen.toarray().astype(bool)
    assert not np.take_along_axis(seen, recs, axis=1).any()

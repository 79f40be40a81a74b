"""The evaluation's time split: T, test users, histories as Redis holds them, candidates, truth."""

from __future__ import annotations

import numpy as np
import pytest

from crossrec.core.config import parse_engine_config
from crossrec.core.events import parse_time
from crossrec.eval.split import SplitSpec, history_names, prepare
from crossrec.trainer.data import from_columns

DAY = 86_400_000
T0 = parse_time("2024-01-01T00:00:00Z")


def config(**params):
    params.setdefault(
        "indicators", [{"name": "buy", "aliases": ["buy", "order"]}, {"name": "view"}]
    )
    return parse_engine_config(
        {
            "datasource": {"params": {"appName": "a"}},
            "algorithms": [{"name": "ur", "params": params}],
        }
    )


def columns(rows):
    """rows: (event, user, target, day)"""
    event, user, target, day = zip(*rows, strict=True)
    return from_columns(
        {"event": event, "user": user, "target": target, "time": T0 + np.array(day) * DAY}
    )


EVENTS = columns(
    [
        ("buy", "u1", "a", 0),
        ("view", "u1", "b", 1),
        ("order", "u1", "c", 2),
        ("buy", "u1", "a", 3),  # again: one history entry, at its newest time
        ("view", "u1", "x", 3),
        ("view", "u1", "w", 3),  # same time as x: id descending, as a Redis sorted set
        ("buy", "u2", "b", 1),
        ("view", "u3", "a", 2),  # u3 has no primary event before T: not a test user
        ("buy", "u4", "d", 4),  # u4 buys again only what it bought: nothing relevant
        # ---- T = day 5 (fraction 0.5 of days 0..10)
        ("buy", "u1", "a", 6),  # already bought: excluded, not relevant
        ("buy", "u1", "d", 7),
        ("order", "u1", "e", 8),
        ("view", "u1", "f", 8),  # a secondary event after T is no truth
        ("buy", "u2", "c", 9),
        ("buy", "u3", "a", 9),
        ("buy", "u4", "d", 10),
    ]
)


def test_split_spec():
    assert SplitSpec.parse("0.8") == SplitSpec(fraction=0.8)
    assert SplitSpec.parse("2011-10-01") == SplitSpec(at_ms=parse_time("2011-10-01T00:00:00Z"))
    assert SplitSpec(fraction=0.25).cut(np.array([100, 500, 200])) == 200
    for bad in ("1.5", "0", "soon"):
        with pytest.raises(ValueError):
            SplitSpec.parse(bad)


def test_history_names_follow_the_engine():
    assert history_names(config()) == ["buy", "order", "view"]
    assert history_names(config(blacklistEvents=["view", "cart"])) == [
        "buy",
        "order",
        "view",
        "cart",
    ]


def test_test_users_truth_and_candidates():
    data = prepare(EVENTS, {}, config(), SplitSpec(fraction=0.5))
    assert data.cut_ms == T0 + 5 * DAY
    assert data.users == ["u1", "u2"]
    truth = [sorted(data.items.ids[i] for i in row.indices) for row in data.relevant]
    assert truth == [["d", "e"], ["c"]]
    seen = [sorted(data.items.ids[i] for i in row.indices) for row in data.seen]
    assert seen == [["a", "c"], ["b"]]  # targets of every alias of the primary indicator
    assert data.stats["eligible_test_users"] == 2
    assert len(data.train) == 9


def test_history_as_redis_holds_it():
    data = prepare(EVENTS, {}, config(), SplitSpec(fraction=0.5))
    assert data.history[0] == {"buy": ["a"], "order": ["c"], "view": ["x", "w", "b"]}
    assert data.times[0]["buy"] == [T0 + 3 * DAY]
    assert data.times[0]["view"] == [T0 + 3 * DAY, T0 + 3 * DAY, T0 + DAY]
    capped = prepare(EVENTS, {}, config(), SplitSpec(fraction=0.5), history_cap=2)
    assert capped.history[0]["view"] == ["x", "w"]


def test_items_catalogue_first():
    data = prepare(EVENTS, {"p": {"color": ["red"]}}, config(), SplitSpec(fraction=0.5))
    items = data.items
    assert items.ids[: items.n_catalogue] == ["a", "b", "c", "d"]  # primary targets before T
    assert items.counts.tolist() == [2, 1, 1, 1]
    assert set(items.ids[items.n_catalogue :]) == {"e", "f", "w", "x", "p"}
    assert items.codes(["c", "p", "nope"]).tolist() == [2, items.code["p"], -1]


def test_train_matrix_rows_of_test_users():
    data = prepare(EVENTS, {}, config(), SplitSpec(fraction=0.5))
    assert data.train_matrix.shape == (3, 4)  # u1, u2, u4 bought before T
    rows = data.train_matrix[data.train_rows].toarray()
    assert rows.tolist() == [[2, 0, 1, 0], [0, 1, 0, 0]]


def test_properties_as_of_the_cut_and_sampling():
    asked = []

    def as_of(cut):
        asked.append(cut)
        return {"a": {"color": ["red"]}}

    data = prepare(EVENTS, as_of, config(), SplitSpec(fraction=0.5), max_users=1, seed=4)
    assert asked == [T0 + 5 * DAY]
    assert data.properties == {"a": {"color": ["red"]}}
    assert len(data.users) == 1 and data.stats["sampled"]
    assert data.stats["eligible_test_users"] == 2


def test_a_date_split():
    data = prepare(EVENTS, {}, config(), SplitSpec.parse("2024-01-09"))  # day 8
    assert data.cut_ms == T0 + 8 * DAY
    truth = [sorted(data.items.ids[i] for i in row.indices) for row in data.relevant]
    assert data.users == ["u1", "u2"] and truth == [["e"], ["c"]]
    assert data.history[0]["buy"] == ["d", "a"]

"""Ranking formulas (UR-SPEC §3.2 with crossrec's decisions) on hand-built events, frozen now."""

from __future__ import annotations

import numpy as np

from crossrec.core.config import Ranking
from crossrec.core.rankings import RankingEvents, interval, ranking_values, user_defined

DAY = 86_400_000
NOW = 1_000 * DAY  # a frozen "now"


def events(*rows):
    """rows: (event name, item index or -1, time ms)."""
    names = tuple(sorted({r[0] for r in rows}))
    return RankingEvents(
        names,
        np.array([names.index(r[0]) for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.int64),
    )


def values(kind, evs, n_items=4, days=10, end=None, names=("buy",), seed=0):
    ranking = Ranking(
        name="r", type=kind, event_names=names, duration_seconds=days * 86400, end_time=end
    )
    return ranking_values(ranking, evs, n_items, NOW, np.random.default_rng(seed)).tolist()


def same(got, expected):
    return all((np.isnan(g) and e is None) or g == e for g, e in zip(got, expected, strict=True))


def test_interval_ends_at_now_or_the_offset_date():
    r = Ranking("r", "popular", ("buy",), 10 * 86400, None)
    assert interval(r, NOW) == (NOW - 10 * DAY, NOW)
    r = Ranking("r", "popular", ("buy",), 86400, 5 * DAY)
    assert interval(r, NOW) == (4 * DAY, 5 * DAY)


def test_popular_counts_raw_events_in_a_half_open_interval():
    evs = events(
        ("buy", 0, NOW - 10 * DAY),  # start: inclusive
        ("buy", 0, NOW - 1),
        ("buy", 0, NOW - 1),  # duplicates count
        ("buy", 1, NOW),  # end: exclusive
        ("buy", 2, NOW - 10 * DAY - 1),  # before the start
        ("view", 3, NOW - DAY),  # not a configured event
        ("buy", -1, NOW - DAY),  # outside the item space
    )
    assert same(values("popular", evs), [3.0, None, None, None])
    assert same(values("popular", evs, names=("buy", "view")), [3.0, None, None, 1.0])


def test_popular_with_an_offset_date():
    evs = events(("buy", 0, 3 * DAY), ("buy", 1, 5 * DAY), ("buy", 1, 5 * DAY + 1))
    assert same(values("popular", evs, days=2, end=5 * DAY + 1), [None, 1.0, None, None])


def test_trending_is_newer_minus_older_half_for_items_in_both():
    start = NOW - 10 * DAY
    mid = start + 5 * DAY
    evs = events(
        ("buy", 0, start), ("buy", 0, mid), ("buy", 0, mid + 1), ("buy", 0, NOW - 1),  # 1 older, 3 newer
        ("buy", 1, start), ("buy", 1, start + 1), ("buy", 1, mid - 1), ("buy", 1, mid),  # 3 older, 1 newer
        ("buy", 2, mid),  # only newer: no value
        ("buy", 3, start),  # only older: no value
    )  # fmt: skip
    assert same(values("trending", evs), [2.0, -2.0, None, None])


def test_trending_without_older_events_has_no_values():
    evs = events(("buy", 0, NOW - DAY))
    assert same(values("trending", evs), [None] * 4)


def test_hot_uses_thirds_and_needs_all_three():
    start, third = NOW - 9 * DAY, 3 * DAY
    evs = events(
        ("buy", 0, start), ("buy", 0, start + third), ("buy", 0, start + third), ("buy", 0, start + 2 * third),
        ("buy", 0, NOW - 1), ("buy", 0, NOW - 2), ("buy", 0, NOW - 3), ("buy", 0, NOW - 4),
        ("buy", 1, start), ("buy", 1, start + 2 * third),
    )  # fmt: skip
    # item 0: older 1, middle 2, newer 5 -> (5-2) - (2-1) = 2; item 1 has no middle events
    assert same(values("hot", evs, days=9), [2.0, None, None, None])


def test_random_covers_the_item_space_and_is_seeded():
    evs = events(("buy", 0, NOW - DAY))
    a, b = values("random", evs, seed=3), values("random", evs, seed=3)
    assert a == b and len(a) == 4 and all(0 <= v < 1 for v in a)


def test_user_defined_comes_from_numeric_properties():
    props = [
        {"score": 2},
        {"score": "3.5"},
        {"score": ["4"]},
        {"score": "high"},
        None,
        {"other": 1},
        {"score": True},
    ]
    assert same(user_defined(props, "score").tolist(), [2.0, 3.5, 4.0, None, None, None, None])
    assert same(values("userDefined", events(("buy", 0, NOW - 1))), [None] * 4)


def test_no_items():
    assert values("popular", events(("buy", -1, NOW - 1)), n_items=0) == []

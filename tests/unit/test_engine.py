"""The in-process engine against an independent brute-force reference (engine_reference.py), on
random models, queries and real-time property changes; hand-checked scores from UR-SPEC §5.6."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from unittest.mock import patch

import numpy as np
import pytest
from engine_reference import Reference, ReferenceError_, build_model, config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from crossrec.core.config import FieldRule
from crossrec.core.query import DateRange, InvalidQuery, Query, parse_query
from crossrec.query import engine as engine_module
from crossrec.query.engine import Engine
from crossrec.trainer.build import build_model as train_model
from crossrec.trainer.data import from_columns

DAY = 86_400_000
DAYS = [f"2024-01-{d:02d}T00:00:00Z" for d in range(1, 10)]
NOW = 1_704_412_800_000  # 2024-01-05T00:00:00Z
COLORS, SIZES = ["red", "blue", "green", "Rot"], ["S", "M"]
UNKNOWN = ["zz", "nope"]


def assert_same(engine: Engine, ref: Reference, q: Query, history, now=NOW, memo=None) -> None:
    try:
        expected, ranks = ref.recommend(q, history, now)
    except ReferenceError_:
        with pytest.raises(InvalidQuery) as caught:
            engine.recommend(q, history, now)
        assert caught.value.field == "eventNames"
        return
    got = engine.recommend(q, history, now, memo=memo)
    if currently_in_test_context():
        event(
            f"results: {'none' if not expected else 'scored' if expected[0][1] > 0 else 'backfill'}"
        )
    assert [i for i, _ in got.item_scores] == [i for i, _ in expected], (q, got, expected)
    for (_, a), (_, b) in zip(got.item_scores, expected, strict=True):
        assert abs(a - b) <= 1e-9, (q, got, expected)
    assert got.backfill == any(s == 0 for _, s in expected)
    assert got.ranks == (ranks if q.with_ranks else None)


# -- random models --------------------------------------------------------------------------


@st.composite
def engine_params(draw, history_only=False):
    pick = draw(st.sampled_from(["indicators", "eventNames"]))
    caps = st.none() | st.integers(1, 6)
    if pick == "indicators":
        names = ["buy", *draw(st.lists(st.sampled_from(["view", "cat"]), unique=True))]
        indicators = []
        for name in names:
            ind = {"name": name}
            if name == "buy":
                ind["aliases"] = draw(
                    st.sampled_from([["buy", "order"], ["order", "buy"], ["buy"]])
                )
            cap = draw(caps)
            if cap:
                ind["maxIndicatorsPerQuery"] = cap
            indicators.append(ind)
        params = {"indicators": indicators}
    else:
        params = {
            "eventNames": ["buy", *draw(st.lists(st.sampled_from(["view", "cat"]), unique=True))]
        }
    if draw(st.booleans()):
        params["maxQueryEvents"] = draw(st.integers(1, 10))
    rankings = draw(
        st.lists(
            st.sampled_from(
                [{"type": "popular"}, {"type": "userDefined", "name": "score"}, {"type": "random"}]
            ),
            unique_by=lambda r: r["type"],
            max_size=3,
        )
    )
    params["rankings"] = rankings
    biases = st.sampled_from([-1.0, 0.0, 0.5, 2.0])
    for key in ("userBias", "itemBias", "itemSetBias"):
        if draw(st.booleans()):
            params[key] = draw(biases)
    blacklist = draw(st.sampled_from([None, [], ["buy"], ["order"], ["view"], ["other"]]))
    if blacklist is not None:
        params["blacklistEvents"] = blacklist
    if draw(st.integers(0, 3)) == 0:
        params["availableDateName"], params["expireDateName"] = "available", "expires"
    params["dateName"] = "date"
    params["returnSelf"] = draw(st.booleans())
    params["num"] = draw(st.integers(1, 8))
    params["recsModel"] = draw(st.sampled_from(["all", "all", "collabFiltering", "backfill"]))
    params["fields"] = draw(st.lists(rules(history_only), max_size=2))
    if history_only and params.get("userBias", 1) <= 0:
        del params["userBias"]
    return params


def rules(excludes_only=False):
    pools = {
        "color": COLORS, "size": SIZES, "n": ["1", "2", "3"], "flag": ["true", "false"],
        "id": ["i00", "i01", "i02", "p0", "new1", "zz"], "buy": ["i00", "i01", "i03", "zz"],
        "cat": ["c0", "c1"], "nope": ["x"], "score": ["1", "2.5"], "date": DAYS[:2],
    }  # fmt: skip
    return st.sampled_from(sorted(pools)).flatmap(
        lambda name: st.fixed_dictionaries(
            {
                "name": st.just(name),
                "values": st.lists(st.sampled_from(pools[name]), min_size=1, max_size=3),
                "bias": st.just(0.0)
                if excludes_only
                else st.sampled_from([-1.0, 0.0, 0.5, 2.0, 20.0]),
            }
        )
    )


def properties():
    return st.none() | property_dicts()


def property_dicts():
    day = st.sampled_from([*DAYS, "soon", 5])
    early, late = st.sampled_from(DAYS[:6]) | day, st.sampled_from(DAYS[3:]) | day
    return st.fixed_dictionaries(
        {},
        optional={
            "color": st.lists(st.sampled_from(COLORS), max_size=3) | st.sampled_from(COLORS),
            "size": st.sampled_from(SIZES),
            "n": st.integers(1, 3),
            "flag": st.booleans(),
            "score": st.sampled_from([1, 2.5, "2.5", -1]),
            "available": early,
            "expires": late,
            "date": day,
            "buy": st.just(["i00"]),  # named like an indicator: not a rule field
            "nested": st.just({"a": 1}),
        },
    )


@st.composite
def scenarios(draw, history_only=False):
    cfg = config(draw(engine_params(history_only)))
    items = [f"i{k:02d}" for k in range(draw(st.integers(1, 12)))]
    if draw(st.booleans()):
        items.append("é 1")
    vocab = {"buy": [*items, "zz"], "view": items, "cat": ["c0", "c1", "c2"]}
    correlators = {}
    for name in cfg.indicator_names:
        correlators[name] = {
            item: draw(st.lists(st.sampled_from(vocab[name]), unique=True, max_size=4))
            for item in items
        }
    extra = [f"p{k}" for k in range(draw(st.integers(0, 2)))]
    props = {item: draw(properties()) for item in [*items, *extra]}
    rank_value = st.none() | st.sampled_from([1.0, 2.0, 3.0]) | st.floats(0, 1)
    ranks = {
        "popRank": {i: draw(rank_value) for i in items},
        "uniqueRank": {i: draw(rank_value) for i in items},
    }
    ranks = {n: {i: v for i, v in r.items() if v is not None} for n, r in ranks.items()}
    model = build_model(cfg, correlators, props, ranks, items)
    updates = draw(
        st.lists(
            st.tuples(st.sampled_from([*items, *extra, "new1", "new2", "new3"]), properties()),
            max_size=draw(st.sampled_from([3, 40])),
        )
    )
    return model, updates, items


@st.composite
def queries(draw, items, history_only=False):
    """A random query and history; `history_only`: one scored from the user's history alone
    (the engine's shortlist), with filters that only drop documents."""
    ids = st.sampled_from([*items, "p0", "new1", "c0", *UNKNOWN])
    q = {}
    if history_only or draw(st.booleans()):
        q["user"] = "u"
    for key in ("userBias",) if history_only else ("userBias", "itemBias", "itemSetBias"):
        if draw(st.integers(0, 3)) == 0:
            q[key] = draw(st.sampled_from([0.5, 3.0] if history_only else [-1.0, 0.0, 0.5, 3.0]))
    if not history_only and draw(st.booleans()):
        q["item"] = draw(ids)
    if not history_only and draw(st.integers(0, 3)) == 0:
        q["itemSet"] = draw(st.lists(ids, max_size=3))
    if draw(st.booleans()):
        q["fields"] = draw(st.lists(rules(history_only), max_size=3))
    if draw(st.integers(0, 3)) == 0:
        rng = {"name": draw(st.sampled_from(["date", "available", "nope"]))}
        after, before = draw(st.sampled_from([None, *DAYS])), draw(st.sampled_from([None, *DAYS]))
        if after and before and after >= before:
            after = None
        rng.update({k: v for k, v in (("after", after), ("before", before)) if v})
        q["dateRange"] = rng
    if draw(st.integers(0, 2)) == 0:
        q["currentDate"] = draw(st.sampled_from(DAYS))
    if draw(st.integers(0, 3)) == 0:
        q["blacklistItems"] = draw(st.lists(ids, max_size=2))
    if draw(st.booleans()):
        q["returnSelf"] = draw(st.booleans())
    if draw(st.booleans()):
        q["num"] = draw(st.integers(1, 10))
    if draw(st.booleans()):
        q["from"] = draw(st.integers(0, 5))
    if draw(st.integers(0, 3)) == 0:
        q["eventNames"] = draw(
            st.lists(st.sampled_from(["buy", "order", "view", "cat", "other"]), max_size=2)
        )
    q["withRanks"] = draw(st.booleans())
    history = {}
    if "user" in q:
        for name in ["buy", "order", "view", "cat", "other"]:
            if draw(st.booleans()):
                history[name] = draw(
                    st.lists(st.sampled_from([*items, "c0", "c1", "new1", *UNKNOWN]), max_size=8)
                )
    return parse_query(q), history


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_engine_matches_the_reference(data):
    check_against_the_reference(data)


@contextlib.contextmanager
def shortlists_of(pages: int) -> Iterator[None]:
    """The engine's shortlists `pages` pages long (from + num each), without its minimum."""
    with (
        patch.object(engine_module, "SHORTLIST", 1),
        patch.object(engine_module, "SHORTLIST_PAGES", pages),
    ):
        yield


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_short_shortlists_still_match_the_reference(data):
    """A memo's shortlist holds at least 64 documents, more than these models have: here it
    holds 1-3 pages, so that filters and blacklists often leave too few of its documents, or
    too few above its least score, and the page must come from scoring every document."""
    with shortlists_of(data.draw(st.integers(1, 3))):
        check_against_the_reference(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_shortlists_match_the_reference(data):
    """Queries scored from the history alone read their page from the memo's shortlist (1-3
    pages long here: these models hold a dozen documents, the engine's shortlists 64): each
    history is asked several different pages, filters and dates through one memo, before and
    after property changes."""
    pages = data.draw(st.integers(1, 3))
    model, updates, items = data.draw(scenarios(history_only=True))
    engine, ref = Engine(model), Reference(model)
    with shortlists_of(pages):
        asked = [(data.draw(queries(items, history_only=True))[1], {}) for _ in range(2)]
        for history, memo in asked:
            for _ in range(4):
                q, _ = data.draw(queries(items, history_only=True))
                assert_same(engine, ref, q, history, memo=memo)
            event(f"shortlist kept: {any(k[0] == 'shortlist' for k in memo)}")
        engine.update_many(dict(updates))
        for item, props in dict(updates).items():
            ref.update(item, props)
        for history, memo in asked:  # documents added meanwhile count
            q, _ = data.draw(queries(items, history_only=True))
            assert_same(engine, ref, q, history, memo=memo)


def check_against_the_reference(data):
    model, updates, items = data.draw(scenarios())
    engine, ref = Engine(model), Reference(model)
    asked = [data.draw(queries(items)) for _ in range(3)]
    memos = [{} for _ in asked]  # as the history cache keeps one per history
    for (q, history), memo in zip(asked, memos, strict=True):
        assert_same(engine, ref, q, history, memo=memo)
        assert_same(engine, ref, q, history, memo=memo)  # again, from the memo
    if data.draw(st.booleans()):
        engine.update_many(dict(updates))
        updates = list(dict(updates).items())
    else:
        for item, props in updates:
            engine.update_properties(item, props)
    for item, props in updates:
        ref.update(item, props)  # an added document stays when its properties go (as Harness)
    for (q, history), memo in zip(asked, memos, strict=True):  # documents added meanwhile count
        assert_same(engine, ref, q, history, memo=memo)
    for _ in range(3):
        assert_same(engine, ref, *data.draw(queries(items)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_trained_models_match_the_reference(data):
    """Models from the trainer (random events), including its property-only documents."""
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    events = rng.choice(["buy", "view", "cat"], n, p=[0.5, 0.3, 0.2])
    users = np.array([f"u{k}" for k in rng.integers(0, 25, n)], dtype=object)
    targets = np.array(
        [
            f"c{k % 4}" if e == "cat" else f"i{k}"
            for e, k in zip(events, rng.integers(0, 30, n), strict=True)
        ],
        dtype=object,
    )
    times = NOW - rng.integers(0, 40, n) * DAY
    params = data.draw(engine_params())
    if "indicators" in params:
        params["indicators"] = [{**i, "aliases": [i["name"]]} for i in params["indicators"]]
    cfg = config(params)
    props = {
        f"i{k}": data.draw(property_dicts().filter(bool))
        for k in data.draw(st.sets(st.integers(0, 35)))
    }
    model = train_model(
        "t", cfg, from_columns({"event": events.astype(object), "user": users, "target": targets, "time": times}),
        {k: v for k, v in props.items() if v}, now_ms=NOW, version="v",
    )  # fmt: skip
    engine, ref = Engine(model), Reference(model)
    items = sorted(model.documents)[:15]
    for _ in range(5):
        q, _ = data.draw(queries(items))
        user = str(users[data.draw(st.integers(0, n - 1))]) if q.user else None
        history = {}
        if user:
            for name in ("buy", "view", "cat"):
                mine = [
                    str(t)
                    for e, u, t in zip(events, users, targets, strict=True)
                    if e == name and u == user
                ]
                history[name] = list(dict.fromkeys(reversed(mine)))
        assert_same(engine, ref, q, history)


# -- hand-checked scores (UR-SPEC §5.6) -------------------------------------------------------


def handmade(params=None, props=None, ranks=None):
    cfg = config({"eventNames": ["purchase", "view"], "rankings": [], "num": 10, **(params or {})})
    correlators = {
        "purchase": {"a": ["x", "y"], "b": ["x"], "c": [], "d": []},
        "view": {"a": ["v"], "b": [], "c": ["v", "w"], "d": []},
    }
    model = build_model(cfg, correlators, props or {}, ranks or {}, ["a", "b", "c", "d"])
    return Engine(model), Reference(model)


def scores(result):
    """Scores as the UR's expected files print them (ES float32: 8 significant digits)."""
    return {item: float(f"{score:.8g}") for item, score in result.item_scores}


def test_idf_of_a_value_every_document_has_is_ln_1_2():
    engine, _ = handmade()
    # purchase: N = 2 documents (a, b) have the field; x is in both -> ln 1.2; y in one -> ln 2
    got = engine.recommend(Query(user="u"), {"purchase": ["x"]}, NOW)
    assert scores(got) == {"a": 0.18232156, "b": 0.18232156, "c": 0.0, "d": 0.0}
    got = engine.recommend(Query(user="u"), {"purchase": ["x", "y"]}, NOW)
    assert scores(got)["a"] == 0.87546874  # ln 1.2 + ln 2 (ES float32: 0.87546873)
    assert math.isclose(got.item_scores[0][1], math.log(1.2) + math.log(2), abs_tol=1e-9)


def test_boosts_multiply_and_clauses_add():
    props = {"a": {"categories": ["Tablets"]}, "b": {"categories": ["Phones"]}}
    engine, _ = handmade(props=props)
    rule = FieldRule("categories", ("Tablets",), 1.05)
    got = engine.recommend(Query(fields=(rule,)), {}, NOW)
    assert scores(got)["a"] == 0.72780454  # 1.05 · ln 2 (ES float32: 0.7278045)
    rule = FieldRule("categories", ("Tablets",), 20.0)
    got = engine.recommend(Query(user="u", fields=(rule,)), {"purchase": ["x"]}, NOW)
    assert scores(got)["a"] == 14.045265  # 20 · ln 2 + ln 1.2
    # one document with the field: ln(1 + 0.5/1.5) = ln(4/3)
    engine, _ = handmade(props={"a": {"tag": ["t"]}})
    got = engine.recommend(Query(fields=(FieldRule("tag", ("t",), 5.0),)), {}, NOW)
    assert scores(got)["a"] == 1.4384104  # 5 · ln(4/3)


def test_the_same_value_in_two_clauses_counts_twice_and_once_within_one():
    engine, _ = handmade()
    # item b's purchase correlators are [x]: the item clause and the history clause both match x
    got = engine.recommend(
        Query(user="u", item="b", return_self=True), {"purchase": ["x", "x"]}, NOW
    )
    assert scores(got)["a"] == 0.36464311  # 2 · ln 1.2
    rule = FieldRule("purchase", ("x", "x", "x"), 1.0)
    assert scores(engine.recommend(Query(fields=(rule,)), {}, NOW))["a"] == 0.18232156


def test_ties_follow_rankings_in_configured_order_missing_last_then_id():
    ranks = {"popRank": {"a": 1.0, "b": 1.0, "c": 2.0}, "uniqueRank": {"a": 0.5, "b": 0.7}}
    params = {"rankings": [{"type": "popular"}, {"type": "random"}]}
    engine, _ = handmade(params=params, ranks=ranks)
    got = engine.recommend(Query(with_ranks=True), {}, NOW)
    assert [i for i, _ in got.item_scores] == ["c", "b", "a", "d"]
    assert got.ranks == [{"popRank": 2.0}, {"popRank": 1.0, "uniqueRank": 0.7}, {"popRank": 1.0, "uniqueRank": 0.5}, {}]  # fmt: skip
    assert got.backfill
    # with history, the scored items come first whatever their rank
    got = engine.recommend(Query(user="u"), {"purchase": ["y"]}, NOW)
    assert [i for i, _ in got.item_scores] == ["a", "c", "b", "d"]


def test_collab_filtering_returns_positive_scores_only():
    engine, _ = handmade(params={"recsModel": "collabFiltering"})
    got = engine.recommend(Query(user="u"), {"purchase": ["y"]}, NOW)
    assert [i for i, _ in got.item_scores] == ["a"] and not got.backfill
    assert engine.recommend(Query(), {}, NOW).item_scores == []


def test_paging_is_stable():
    engine, _ = handmade()
    everything = engine.recommend(Query(user="u", num=10), {"view": ["v"]}, NOW).item_scores
    pages = [engine.recommend(Query(user="u", num=1, from_=k), {"view": ["v"]}, NOW).item_scores for k in range(5)]  # fmt: skip
    assert [p[0] for p in pages if p] == everything and pages[4] == []


def test_available_and_expire_dates_unless_a_date_range():
    props = {
        "a": {"available": DAYS[0], "expires": DAYS[5]},
        "b": {"available": DAYS[4], "expires": DAYS[8]},
        "c": {"available": DAYS[0], "date": DAYS[3]},
        "d": {"available": DAYS[0], "expires": DAYS[4], "date": DAYS[6]},
    }
    engine, _ = handmade(params={"availableDateName": "available", "expireDateName": "expires"}, props=props)  # fmt: skip
    ids = lambda r: sorted(i for i, _ in r.item_scores)  # noqa: E731
    now = NOW  # DAYS[4]: b becomes available, d expires (exclusive)
    assert ids(engine.recommend(Query(), {}, now)) == ["a", "b"]
    assert ids(engine.recommend(Query(current_date=NOW - DAY), {}, now)) == ["a", "d"]
    in_range = DateRange("date", after=NOW - 2 * DAY, before=NOW + 3 * DAY)
    assert ids(engine.recommend(Query(date_range=in_range), {}, now)) == ["c", "d"]
    exclusive = DateRange("date", after=NOW - DAY)  # c's date is exactly after: excluded
    assert ids(engine.recommend(Query(date_range=exclusive), {}, now)) == ["d"]


DATES = st.none() | st.sampled_from(DAYS)
# times on, beside and between the documents' dates (DAYS[k] is NOW + (k - 4) days)
TIMES = st.integers(-2, 10).map(lambda d: NOW + (d - 4) * DAY) | st.integers(
    NOW - 5 * DAY, NOW + 5 * DAY
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(DATES, DATES), min_size=4, max_size=4),
    st.lists(TIMES | TIMES.map(lambda t: t - 1), min_size=1, max_size=12),
    st.tuples(st.sampled_from("abcd"), DATES, DATES),
)
def test_the_kept_live_mask_is_the_one_of_its_moment(dates, times, change):
    """Documents.live, kept between the dates around a time, equals the comparison made afresh,
    at times on, between and beside documents' dates, before and after a date changes."""

    def props_of(available, expires):
        return {k: v for k, v in (("available", available), ("expires", expires)) if v}

    props = {item: props_of(*d) for item, d in zip("abcd", dates, strict=True)}
    engine, _ = handmade(params={"availableDateName": "available", "expireDateName": "expires"}, props=props)  # fmt: skip
    docs = engine.documents

    def check(at: int) -> None:
        expected = (docs.date("available") <= at) & (docs.date("expires") > at)
        got = docs.live("available", "expires", at)
        assert got.tolist() == expected.tolist(), at
        assert not got.flags.writeable

    for at in times:
        check(at)
    item, available, expires = change
    engine.update_properties(item, props_of(available, expires))
    for at in times:
        check(at)


def test_blacklists_and_return_self():
    engine, _ = handmade(params={"blacklistEvents": ["purchase", "cart"]})
    hist = {"purchase": ["a"], "cart": ["b"], "view": ["c"]}
    got = engine.recommend(Query(user="u"), hist, NOW)
    assert sorted(i for i, _ in got.item_scores) == ["c", "d"]
    got = engine.recommend(Query(item="b", blacklist_items=("d",)), {}, NOW)
    assert sorted(i for i, _ in got.item_scores) == ["a", "c"]
    got = engine.recommend(Query(item="b", return_self=True), {}, NOW)
    assert [i for i, _ in got.item_scores][:2] == ["a", "b"]
    assert engine.history_event_names(Query()) == ["purchase", "view", "cart"]
    assert engine.history_event_names(Query(event_names=("view",))) == ["view", "purchase", "cart"]


def test_a_memo_is_reused_but_never_hides_a_blacklisted_item_added_later():
    engine, _ = handmade(params={"blacklistEvents": ["purchase"]})
    boost_red = Query(user="u", fields=(FieldRule("color", ("red",), 2.0),))
    history, memo = {"purchase": ["a", "new1"], "view": ["c"]}, {}
    first = engine.recommend(boost_red, history, NOW, memo=memo)
    assert memo and "a" not in [i for i, _ in first.item_scores]
    kept = dict(memo)
    assert engine.recommend(boost_red, history, NOW, memo=memo) == first
    assert all(memo[k] is kept[k] for k in kept)  # reused, not derived again
    engine.update_properties("new1", {"color": ["red"]})  # now a document, and boosted
    assert engine.recommend(boost_red, {}, NOW).item_scores[0][0] == "new1"
    again = engine.recommend(boost_red, history, NOW, memo=memo)
    assert "new1" not in [i for i, _ in again.item_scores]  # still blacklisted


def test_negative_biases_filter():
    engine, _ = handmade()
    got = engine.recommend(Query(user="u", user_bias=-1), {"view": ["w"]}, NOW)
    assert got.item_scores == [("c", 0.0)]
    got = engine.recommend(Query(item="c", item_bias=-1, return_self=True), {}, NOW)
    assert sorted(i for i, _ in got.item_scores) == ["a", "c"]  # view correlators v or w
    got = engine.recommend(Query(item_set=("y",), item_set_bias=-2), {}, NOW)
    assert got.item_scores == [("a", 0.0)]
    got = engine.recommend(Query(user="u", user_bias=0), {"view": ["w"]}, NOW)
    assert all(s == 0 for _, s in got.item_scores) and len(got.item_scores) == 4


def test_unknown_event_names_are_invalid():
    engine, _ = handmade()
    with pytest.raises(InvalidQuery, match="'buy' is not an event of this model"):
        engine.recommend(Query(event_names=("buy",)), {}, NOW)


def test_history_caps_use_the_newest_events():
    cfg = config(
        {
            "indicators": [
                {"name": "purchase", "maxIndicatorsPerQuery": 2, "aliases": ["buy", "order"]},
                {"name": "view", "maxIndicatorsPerQuery": 5},
            ],
            "maxQueryEvents": 3,
            "rankings": [],
            "blacklistEvents": [],
        }
    )
    items = ["a", "b", "c", "d", "e"]
    correlators = {"purchase": {i: [i] for i in items}, "view": {i: [i] for i in items}}
    engine = Engine(build_model(cfg, correlators, {}, {}, items))
    hist = {"buy": ["a", "b"], "order": ["c"], "view": ["d", "e"]}
    times = {"buy": [50, 10], "order": [40], "view": [30, 20]}

    def scored(**kw):
        got = engine.recommend(Query(user="u", num=5), hist, NOW, **kw)
        return sorted(i for i, s in got.item_scores if s > 0)

    # with times: purchase = newest two of buy+order (a@50, c@40); then the 3 newest overall
    assert scored(times=times) == ["a", "c", "d"]
    # without: buy then order (a, b), and the budget round-robin by recency rank: a, d, b
    assert scored() == ["a", "b", "d"]


# -- real-time properties -------------------------------------------------------------------


def test_update_properties_changes_rules_dates_and_ranks():
    params = {
        "rankings": [{"type": "userDefined", "name": "score"}],
        "availableDateName": "available",
        "expireDateName": "expires",
    }
    live = {"available": DAYS[0], "expires": DAYS[8]}
    props = {i: {**live, "color": ["red"], "score": k} for k, i in enumerate("abcd")}
    engine, ref = handmade(params=params, props=props)
    red = Query(fields=(FieldRule("color", ("red",), -1),))
    assert [i for i, _ in engine.recommend(red, {}, NOW).item_scores] == ["d", "c", "b", "a"]

    changes = {
        "b": {**live, "color": ["blue"], "score": 1},  # leaves the rule
        "c": {**live, "color": ["red"], "score": 9},  # moves up
        "new": {**live, "color": ["red"], "score": 5},  # a new document
        "d": None,  # no properties: no dates, filtered out
    }
    for item, p in changes.items():
        engine.update_properties(item, p)
        ref.update(item, p)
    got = engine.recommend(red, {}, NOW)
    assert [i for i, _ in got.item_scores] == ["c", "new", "a"]
    assert engine.properties_of("new") == changes["new"] and engine.properties_of("d") is None
    for q in (red, Query(), Query(fields=(FieldRule("color", ("blue",), 2),))):
        assert_same(engine, ref, q, {})
    assert len(engine) == 5


def test_many_new_documents_take_the_sort_path():
    engine, ref = handmade(params={"rankings": [{"type": "userDefined", "name": "score"}]})
    changes = {f"n{k:03d}": {"score": k % 7, "tag": [str(k % 3)]} for k in range(100)}
    engine.update_many(changes)
    for item, p in changes.items():
        ref.update(item, p)
    engine.update_properties("n050", {"score": 100})
    ref.update("n050", {"score": 100})
    for q in (Query(num=200), Query(fields=(FieldRule("tag", ("1",), 3),), num=50, from_=7)):
        assert_same(engine, ref, q, {})
    assert engine.recommend(Query(num=1), {}, NOW).item_scores == [("n050", 0.0)]


def test_added_ids_are_renumbered_when_their_gaps_close(monkeypatch):
    from crossrec.query import documents

    monkeypatch.setattr(documents, "GAP", 4)  # every few inserts between two ids closes a gap
    engine, ref = handmade()
    for k in range(12):
        for item in (f"b{k:02d}", f"a{12 - k:02d}", f"zz{k}"):
            engine.update_properties(item, {"tag": [str(k % 2)]})
            ref.update(item, {"tag": [str(k % 2)]})
    assert_same(engine, ref, Query(num=100), {})
    assert_same(engine, ref, Query(num=7, from_=3, fields=(FieldRule("tag", ("1",), 1),)), {})
    ranks = engine.documents.id_rank[engine.documents.by_id]
    assert (np.diff(ranks) > 0).all()


def test_large_models_take_the_threshold_and_tie_paths():
    """Thousands of documents: the block-maxima threshold, > SORT_LIMIT candidates, and a tie
    group at the k-th score larger than SORT_LIMIT (read in backfill order)."""
    rng = np.random.default_rng(11)
    cfg = config(
        {
            "eventNames": ["buy", "cat"],
            "rankings": [{"type": "popular"}, {"type": "random"}],
            "blacklistEvents": ["buy"],
        }
    )
    items = [f"i{k:05d}" for k in range(5000)]
    popular = rng.zipf(1.6, 5000) % 5000
    correlators = {
        "buy": {i: sorted({items[p] for p in rng.choice(popular, 8)}) for i in items},
        "cat": {i: sorted({f"c{c}" for c in rng.integers(0, 40, 6)}) for i in items},
    }
    props = {i: {"tag": ["common"], "group": [str(k % 7)]} for k, i in enumerate(items[:3000])}
    ranks = {
        "popRank": {i: float(rng.integers(0, 4)) for i in items if rng.random() < 0.7},
        "uniqueRank": {i: float(rng.random()) for i in items if rng.random() < 0.5},
    }
    model = build_model(cfg, correlators, props, ranks, items)
    engine, ref = Engine(model), Reference(model)
    common = FieldRule("tag", ("common",), 1.0)
    queries = [
        (Query(user="u", num=5), {"buy": items[:40:3], "cat": ["c1", "c2", "c3"]}),
        (Query(user="u", num=7, from_=30), {"buy": [items[p] for p in popular[:30]]}),
        (Query(fields=(common,), num=10), {}),  # 3000 documents tie: the tie path
        (Query(fields=(common, FieldRule("group", ("3",), 0.0)), num=25, from_=3), {}),
        (Query(item=items[7], num=12), {}),
        (Query(user="u", fields=(FieldRule("group", ("1", "2"), -1),), num=9), {"cat": ["c5"]}),
        (Query(fields=(common,), num=2500, from_=2400), {}),  # a page beyond the sort limit
        (Query(user="u", num=4000), {"cat": ["c7", "c8"]}),
    ]
    for q, history in queries:
        assert_same(engine, ref, q, history)


def test_the_scoring_fallback_without_scipys_kernel(monkeypatch):
    from crossrec.query import scoring

    monkeypatch.setattr(scoring, "csc_matvec", None)
    engine, ref = handmade(props={"a": {"tag": ["t"]}, "c": {"tag": ["t", "u"]}})
    for q, history in [
        (Query(user="u", item="b", fields=(FieldRule("tag", ("t",), 2),)), {"purchase": ["x", "y"], "view": ["w"]}),
        (Query(user="u"), {"view": ["v", "w"]}),
    ]:  # fmt: skip
        assert_same(engine, ref, q, history)

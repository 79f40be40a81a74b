"""The UR query document: every field parsed, every mistake named, PIO JSON round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossrec.core.config import FieldRule
from crossrec.core.events import parse_time
from crossrec.core.query import DateRange, InvalidQuery, Query, Result, parse_query


def test_empty_query_is_popular_items():
    assert parse_query({}) == Query()


def test_every_field():
    q = parse_query(
        {
            "user": "u1",
            "userBias": 2,
            "item": "Iphone 6",
            "itemBias": -1.5,
            "itemSet": ["a", "b"],
            "itemSetBias": 0.5,
            "fields": [{"name": "categories", "values": ["Tablets"], "bias": 20}],
            "dateRange": {"name": "date", "after": "2024-01-01T00:00:00Z", "before": "2024-02-01"},
            "currentDate": "2024-01-15T12:00:00.250+01:00",
            "blacklistItems": ["x"],
            "returnSelf": True,
            "num": 4,
            "from": 8,
            "eventNames": ["purchase"],
            "withRanks": True,
        }
    )
    assert q == Query(
        user="u1",
        user_bias=2.0,
        item="Iphone 6",
        item_bias=-1.5,
        item_set=("a", "b"),
        item_set_bias=0.5,
        fields=(FieldRule("categories", ("Tablets",), 20.0),),
        date_range=DateRange(
            "date",
            before=parse_time("2024-02-01T00:00:00Z"),
            after=parse_time("2024-01-01T00:00:00Z"),
        ),
        current_date=parse_time("2024-01-15T11:00:00.250Z"),
        blacklist_items=("x",),
        return_self=True,
        num=4,
        from_=8,
        event_names=("purchase",),
        with_ranks=True,
    )
    assert parse_query(q.to_pio()) == q


def test_null_means_not_given():
    assert parse_query({"user": None, "num": None, "fields": None, "dateRange": None}) == Query()


def test_integral_doubles_are_integers():
    assert parse_query({"num": 20.0, "from": 0.0}) == Query(num=20, from_=0)


def test_date_range_without_bounds_is_inactive():
    q = parse_query({"dateRange": {"name": "date"}})
    assert q.date_range == DateRange("date") and not q.date_range.active


BAD = [
    ([], "query", "must be a JSON object, got a list"),
    ({"userbias": 1}, "userbias", "unknown key (did you mean 'userBias'?)"),
    ({"rules": []}, "rules", "unknown key"),
    ({"user": 7}, "user", "must be a string, got a number"),
    ({"user": ""}, "user", "must not be empty"),
    ({"item": ["a"]}, "item", "must be a string, got a list"),
    ({"userBias": "2"}, "userBias", "must be a number, got a string"),
    ({"itemBias": True}, "itemBias", "must be a number, got a boolean"),
    ({"itemSetBias": float("inf")}, "itemSetBias", "must be a finite number"),
    ({"itemSet": "a"}, "itemSet", "must be a list of strings, got a string"),
    ({"itemSet": ["a", 3]}, "itemSet[1]", "must be a string, got a number"),
    ({"blacklistItems": [""]}, "blacklistItems[0]", "must not be empty"),
    ({"eventNames": {"a": 1}}, "eventNames", "must be a list of strings, got an object"),
    ({"fields": {"name": "a"}}, "fields", "must be a list of rules, got an object"),
    ({"fields": ["a"]}, "fields[0]", "must be a JSON object, got a string"),
    ({"fields": [{"name": "a", "values": ["x"]}]}, "fields[0].bias", "is required"),
    ({"fields": [{"values": ["x"], "bias": 1}]}, "fields[0].name", "is required"),
    ({"fields": [{"name": "a", "bias": 1}]}, "fields[0].values", "is required"),
    (
        {
            "fields": [
                {"name": "a", "values": ["x"], "bias": 1},
                {"name": "b", "values": ["y"], "bias": "high"},
            ]
        },
        "fields[1].bias",
        "must be a number, got a string",
    ),
    (
        {"fields": [{"name": "a", "values": "x", "bias": 1}]},
        "fields[0].values",
        "must be a list of strings, got a string",
    ),
    (
        {"fields": [{"name": "a", "values": [1], "bias": 1}]},
        "fields[0].values[0]",
        "must be a string, got a number",
    ),
    (
        {"fields": [{"name": "a", "values": [], "bias": 1}]},
        "fields[0].values",
        "must list at least one value",
    ),
    (
        {"fields": [{"name": 3, "values": ["x"], "bias": 1}]},
        "fields[0].name",
        "must be a string, got a number",
    ),
    (
        {"fields": [{"name": "a", "values": ["x"], "bias": 1, "boost": 2}]},
        "fields[0].boost",
        "unknown key",
    ),
    ({"dateRange": "2024"}, "dateRange", "must be a JSON object, got a string"),
    ({"dateRange": {"before": "2024-01-01"}}, "dateRange.name", "is required"),
    (
        {"dateRange": {"name": "d", "after": "yesterday"}},
        "dateRange.after",
        "'yesterday' is not an ISO-8601 date-time",
    ),
    (
        {"dateRange": {"name": "d", "before": 5}},
        "dateRange.before",
        "must be an ISO-8601 date-time string, got a number",
    ),
    (
        {"dateRange": {"name": "d", "after": "2024-02-01", "before": "2024-01-01"}},
        "dateRange.after",
        "must be earlier than dateRange.before",
    ),
    ({"dateRange": {"name": "d", "from": "2024-02-01"}}, "dateRange.from", "unknown key"),
    (
        {"currentDate": "2024-13-01T00:00:00Z"},
        "currentDate",
        "'2024-13-01T00:00:00Z' is not an ISO-8601 date-time",
    ),
    (
        {"currentDate": 1700000000},
        "currentDate",
        "must be an ISO-8601 date-time string, got a number",
    ),
    ({"returnSelf": "true"}, "returnSelf", "must be true or false, got a string"),
    ({"withRanks": 1}, "withRanks", "must be true or false, got a number"),
    ({"num": 0}, "num", "must be a positive integer, got 0"),
    ({"num": -3}, "num", "must be a positive integer, got -3"),
    ({"num": 2.5}, "num", "must be a positive integer, got a number"),
    ({"num": "10"}, "num", "must be a positive integer, got a string"),
    ({"num": True}, "num", "must be a positive integer, got a boolean"),
    ({"num": 10_001}, "num", "must be at most 10000, got 10001"),
    ({"from": -1}, "from", "must be a non-negative integer, got -1"),
    ({"from": 9_999, "num": 2}, "from", "from + num must be at most 10000"),
]


@pytest.mark.parametrize(
    ("doc", "field", "message"), BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD]
)
def test_invalid_queries_name_the_field(doc, field, message):
    with pytest.raises(InvalidQuery) as caught:
        parse_query(doc)
    assert caught.value.field == field
    assert caught.value.message.startswith(message), caught.value.message
    assert str(caught.value) == f"{field}: {caught.value.message}"


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(InvalidQuery, match="known keys: user, userBias, item"):
        parse_query({"size": 3})


def test_result_to_pio():
    r = Result([("a", 1.5), ("b", 0.0)], backfill=True)
    assert r.to_pio() == {"itemScores": [{"item": "a", "score": 1.5}, {"item": "b", "score": 0.0}]}
    ranked = Result([("a", 1.5)], ranks=[{"popRank": 3.0}])
    assert ranked.to_pio() == {
        "itemScores": [{"item": "a", "score": 1.5, "ranks": {"popRank": 3.0}}]
    }


ids = st.text(min_size=1, max_size=6)
biases = st.none() | st.floats(-5, 5, allow_nan=False) | st.integers(-3, 3).map(float)
millis = st.integers(0, 4_000_000_000_000)
rules = st.builds(
    FieldRule,
    ids,
    st.lists(ids, min_size=1, max_size=3).map(tuple),
    st.floats(-3, 3, allow_nan=False),
)


@st.composite
def date_ranges(draw):
    after, before = draw(st.none() | millis), draw(st.none() | millis)
    if after is not None and before is not None and after >= before:
        after, before = None, before
    return DateRange(draw(ids), before, after)


queries = st.builds(
    Query,
    user=st.none() | ids,
    user_bias=biases,
    item=st.none() | ids,
    item_bias=biases,
    item_set=st.lists(ids, max_size=3).map(tuple),
    item_set_bias=biases,
    fields=st.lists(rules, max_size=3).map(tuple),
    date_range=st.none() | date_ranges(),
    current_date=st.none() | millis,
    blacklist_items=st.lists(ids, max_size=3).map(tuple),
    return_self=st.none() | st.booleans(),
    num=st.none() | st.integers(1, 100),
    from_=st.integers(0, 100),
    event_names=st.none() | st.lists(ids, max_size=3).map(tuple),
    with_ranks=st.booleans(),
)


@settings(max_examples=200)
@given(queries)
def test_pio_round_trip(q):
    assert parse_query(q.to_pio()) == q

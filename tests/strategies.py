"""Hypothesis strategies for PredictionIO events: valid ones, and bad ones of every kind ingest must
reject (each bad one comes with the kind of fault, for the error messages)."""

from __future__ import annotations

import orjson
from hypothesis import strategies as st

names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12
).filter(lambda s: not s.startswith(("$", "pio_")))
times = st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(lambda d: d.isoformat())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
plain_props = st.dictionaries(names, json_values, max_size=4)


def usage_event(draw: st.DrawFn) -> dict:
    """A user → item event with the required fields only."""
    return {
        "event": draw(names),
        "entityType": "user",
        "entityId": draw(names),
        "targetEntityType": "item",
        "targetEntityId": draw(names),
    }


@st.composite
def valid_events(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(["usage", "set", "unset", "delete"]))
    if kind == "usage":
        event = usage_event(draw)
    else:
        props = draw(plain_props.filter(bool)) if kind == "unset" else draw(plain_props)
        event = {
            "event": f"${kind}",
            "entityType": "item",
            "entityId": draw(names),
            "properties": props,
        }
    if draw(st.booleans()):
        event["eventTime"] = draw(times)
    if draw(st.booleans()):
        event["eventId"] = draw(names)
    return event


def _drop(field: str):
    return lambda e, draw: {k: v for k, v in e.items() if k != field}


def _set(field: str, values: st.SearchStrategy):
    return lambda e, draw: {**e, field: draw(values)}


NOT_A_STRING = (
    st.integers(-(2**62), 2**62)
    | st.booleans()
    | st.lists(st.integers(0, 9), max_size=2)
    | st.just({"a": 1})
)

MUTATIONS = {
    "missing event": _drop("event"),
    "missing entityType": _drop("entityType"),
    "missing entityId": _drop("entityId"),
    "empty entityId": _set("entityId", st.just("")),
    "event not a string": _set("event", NOT_A_STRING),
    "entityId not a string": _set("entityId", NOT_A_STRING),
    "reserved event name": _set("event", st.sampled_from(["$foo", "pio_x", "$SET", "$"])),
    "reserved entity type": _set("entityType", st.sampled_from(["$user", "pio_user"])),
    "bad eventTime": _set(
        "eventTime",
        st.sampled_from(["yesterday", "2024-13-01T00:00:00Z", "", "12:00"]) | NOT_A_STRING,
    ),
    "extra field": lambda e, draw: {
        **e,
        draw(names.filter(lambda n: n not in e and n[0].islower())) + "_x": 1,
    },
    "properties not an object": _set(
        "properties", st.lists(st.integers(0, 9), max_size=2) | st.text(max_size=3)
    ),
    "reserved property": lambda e, draw: {**e, "properties": {"$p": 1}},
    "lone targetEntityId": lambda e, draw: {
        **{k: v for k, v in e.items() if k != "targetEntityType"},
        "targetEntityId": draw(names),
    },
    "special event with target": lambda e, draw: {
        **e,
        "event": draw(st.sampled_from(["$set", "$delete"])),
        "entityType": "item",
        "targetEntityType": "item",
        "targetEntityId": draw(names),
    },
    "unset without properties": lambda e, draw: {
        k: v
        for k, v in {**e, "event": "$unset", "entityType": "item"}.items()
        if k not in ("properties", "targetEntityType", "targetEntityId")
    },
    "tags not strings": _set("tags", st.lists(st.integers(0, 9), min_size=1, max_size=3)),
}

RAW_FAULTS = {
    "malformed JSON": st.binary(min_size=1, max_size=40).filter(lambda b: not _is_json(b)),
    "not an object": st.sampled_from([b"[]", b"1", b'"event"', b"null", b"true", b"[{}]"]),
    "oversized": st.integers(64 * 1024, 80 * 1024).map(
        lambda n: orjson.dumps(
            {"event": "v", "entityType": "user", "entityId": "u", "properties": {"p": "x" * n}}
        )
    ),
}


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
        return True
    except orjson.JSONDecodeError:
        return False


@st.composite
def bad_events(draw: st.DrawFn) -> tuple[str, bytes]:
    """(fault, raw bytes) of an event PredictionIO would reject."""
    if draw(st.integers(0, 4)) == 0:
        fault = draw(st.sampled_from(sorted(RAW_FAULTS)))
        return fault, draw(RAW_FAULTS[fault])
    fault = draw(st.sampled_from(sorted(MUTATIONS)))
    event = MUTATIONS[fault](draw(valid_events()), draw)
    return fault, orjson.dumps(event)

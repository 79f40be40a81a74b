"""PredictionIO's event rules: the hand-written validator, and its agreement with the JSON Schema."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from strategies import MUTATIONS, bad_events, valid_events

from crossrec.core.events import InvalidEvent, decode, format_time, parse_time, validate

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "event.schema.json").read_text()
)
formats = FormatChecker()


@formats.checks("date-time", raises=ValueError)
def _iso_time(value: object) -> bool:
    return not isinstance(value, str) or bool(datetime.fromisoformat(value))


SCHEMA_VALIDATOR = Draft202012Validator(SCHEMA, format_checker=formats)


@given(valid_events())
@settings(max_examples=500)
def test_valid_events_pass_both_the_validator_and_the_schema(event: dict) -> None:
    parsed = validate(event)
    assert parsed.event == event["event"] and parsed.entity_id == event["entityId"]
    assert SCHEMA_VALIDATOR.is_valid(event)


@given(bad_events())
@settings(max_examples=2000)
def test_bad_events_are_rejected_with_a_reason(fault_and_raw: tuple[str, bytes]) -> None:
    fault, raw = fault_and_raw
    with pytest.raises(InvalidEvent) as rejected:
        decode(raw)
    assert str(rejected.value)  # a reason, never an empty message
    if fault in MUTATIONS:  # JSON objects: the schema must reject them too
        assert not SCHEMA_VALIDATOR.is_valid(orjson.loads(raw)), fault


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"entityType": "user", "entityId": "u"}, "event is required"),
        ({"event": "", "entityType": "user", "entityId": "u"}, "event must not be empty"),
        (
            {
                "event": "$set",
                "entityType": "item",
                "entityId": "i",
                "targetEntityType": "item",
                "targetEntityId": "j",
            },
            "$set must not have a target entity",
        ),
        (
            {"event": "$unset", "entityType": "item", "entityId": "i", "properties": {}},
            "$unset needs properties (the keys to remove)",
        ),
        (
            {"event": "buy", "entityType": "user", "entityId": "u", "targetEntityId": "i"},
            "targetEntityType and targetEntityId must be given together",
        ),
        (
            {"event": "pio_buy", "entityType": "user", "entityId": "u"},
            "event 'pio_buy' uses a reserved prefix; only $set, $unset, $delete",
        ),
        (
            {"event": "buy", "entityType": "pio_user", "entityId": "u"},
            "entityType 'pio_user' uses a reserved prefix ($ or pio_)",
        ),
        (
            {"event": "buy", "entityType": "user", "entityId": "u", "properties": {"pio_x": 1}},
            "property 'pio_x' uses a reserved prefix ($ or pio_)",
        ),
        (
            {"event": "buy", "entityType": "user", "entityId": "u", "eventTime": "soon"},
            "eventTime is not an ISO-8601 time: 'soon'",
        ),
        (
            {"event": "buy", "entityType": "user", "entityId": "u", "colour": "red"},
            "unknown field(s): colour",
        ),
    ],
)
def test_each_rule_says_what_is_wrong(event: dict, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=None) as rejected:
        validate(event)
    assert str(rejected.value) == reason


def test_builtin_entity_type_and_defaults() -> None:
    event = validate({"event": "x", "entityType": "pio_pr", "entityId": "p"}, default_time=1234)
    assert (event.event_time, event.properties, event.tags) == (1234, {}, [])


def test_oversized_and_malformed_bytes() -> None:
    with pytest.raises(InvalidEvent, match="over the limit of 10"):
        decode(b'{"event": "a"}', max_bytes=10)
    with pytest.raises(InvalidEvent, match="malformed JSON"):
        decode(b"{not json")


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 1, 1)))
def test_times_round_trip_at_millisecond_precision(moment: datetime) -> None:
    millis = parse_time(moment.isoformat())  # no zone: UTC, as in PredictionIO
    assert parse_time(format_time(millis)) == millis


def test_time_zones_are_honoured() -> None:
    assert parse_time("2024-01-01T01:00:00+01:00") == parse_time("2024-01-01T00:00:00Z")

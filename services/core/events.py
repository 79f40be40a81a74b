"""PredictionIO events: the data type and PIO's validation rules (UR-SPEC §1.1).

`schemas/event.schema.json` is the contract; this module is its fast, hand-written twin (the ingest
path validates tens of thousands of events a second, which jsonschema cannot). A test checks that the
two agree on generated events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

SPECIAL_EVENTS = frozenset({"$set", "$unset", "$delete"})
BUILTIN_ENTITY_TYPES = frozenset({"pio_pr"})
RESERVED_PREFIXES = ("$", "pio_")
KNOWN_FIELDS = frozenset(
    {
        "eventId",
        "event",
        "entityType",
        "entityId",
        "targetEntityType",
        "targetEntityId",
        "properties",
        "eventTime",
        "tags",
        "prId",
        "creationTime",
    }
)
DEFAULT_MAX_EVENT_BYTES = 64 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class InvalidEvent(ValueError):
    """An event PredictionIO's event server would reject; the message is the reason."""


@dataclass(slots=True)
class Event:
    event: str
    entity_type: str
    entity_id: str
    event_time: int  # milliseconds since the epoch, UTC
    target_entity_type: str | None = None
    target_entity_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    tags: list[str] = field(default_factory=list)
    pr_id: str | None = None
    creation_time: int | None = None

    @property
    def is_special(self) -> bool:
        return self.event in SPECIAL_EVENTS

    def to_pio(self) -> dict[str, Any]:
        """The PredictionIO JSON form (as `pio export` writes it)."""
        out: dict[str, Any] = {
            "eventId": self.event_id,
            "event": self.event,
            "entityType": self.entity_type,
            "entityId": self.entity_id,
        }
        if self.target_entity_type is not None:
            out["targetEntityType"] = self.target_entity_type
            out["targetEntityId"] = self.target_entity_id
        out["properties"] = self.properties
        out["eventTime"] = format_time(self.event_time)
        if self.tags:
            out["tags"] = self.tags
        if self.pr_id is not None:
            out["prId"] = self.pr_id
        if self.creation_time is not None:
            out["creationTime"] = format_time(self.creation_time)
        return out


def parse_time(value: Any, what: str = "eventTime") -> int:
    """ISO-8601 to epoch milliseconds; a time without a zone is UTC, as in PredictionIO."""
    if not isinstance(value, str):
        raise InvalidEvent(f"{what} must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(f"{what} is not an ISO-8601 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return (parsed - _EPOCH) // _MILLISECOND  # exact: no float rounding
    except (OverflowError, OSError, ValueError):
        raise InvalidEvent(f"{what} is out of range: {value[:40]!r}") from None


def format_time(millis: int) -> str:
    return (
        (_EPOCH + millis * _MILLISECOND).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def now_millis() -> int:
    return int(datetime.now(tz=UTC).timestamp() * 1000)


def _required_name(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        raise InvalidEvent(f"{key} is required")
    if not isinstance(value, str):
        raise InvalidEvent(f"{key} must be a string")
    if not value:
        raise InvalidEvent(f"{key} must not be empty")
    return value


def _optional_string(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidEvent(f"{key} must be a string")
    return value


def _check_entity_type(value: str, key: str) -> None:
    if value.startswith(RESERVED_PREFIXES) and value not in BUILTIN_ENTITY_TYPES:
        raise InvalidEvent(f"{key} {value!r} uses a reserved prefix ($ or pio_)")


def validate(doc: Any, *, default_time: int | None = None) -> Event:
    """Check a decoded event against PredictionIO's rules and return it as an Event."""
    if not isinstance(doc, dict):
        raise InvalidEvent("an event must be a JSON object")
    if not KNOWN_FIELDS.issuperset(doc):
        extra = sorted(doc.keys() - KNOWN_FIELDS)
        raise InvalidEvent(f"unknown field(s): {', '.join(extra)}")

    name = _required_name(doc, "event")
    entity_type = _required_name(doc, "entityType")
    entity_id = _required_name(doc, "entityId")
    _check_entity_type(entity_type, "entityType")

    target_type = _optional_string(doc, "targetEntityType")
    target_id = _optional_string(doc, "targetEntityId")
    if (target_type is None) != (target_id is None):
        raise InvalidEvent("targetEntityType and targetEntityId must be given together")
    if target_type is not None:
        if not target_type or not target_id:
            raise InvalidEvent("targetEntityType and targetEntityId must not be empty")
        _check_entity_type(target_type, "targetEntityType")

    if name.startswith(RESERVED_PREFIXES):
        if name not in SPECIAL_EVENTS:
            raise InvalidEvent(f"event {name!r} uses a reserved prefix; only $set, $unset, $delete")
        if target_type is not None:
            raise InvalidEvent(f"{name} must not have a target entity")

    properties = doc.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        raise InvalidEvent("properties must be a JSON object")
    for key in properties:
        if key.startswith(RESERVED_PREFIXES):
            raise InvalidEvent(f"property {key!r} uses a reserved prefix ($ or pio_)")
    if name == "$unset" and not properties:
        raise InvalidEvent("$unset needs properties (the keys to remove)")

    raw_time = doc.get("eventTime")
    if raw_time is None:
        if default_time is None:
            default_time = now_millis()
        event_time = default_time
    else:
        event_time = parse_time(raw_time)

    tags = doc.get("tags")
    if tags is None:
        tags = []
    elif not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidEvent("tags must be a list of strings")

    creation = doc.get("creationTime")
    return Event(
        event=name,
        entity_type=entity_type,
        entity_id=entity_id,
        event_time=event_time,
        target_entity_type=target_type,
        target_entity_id=target_id,
        properties=properties,
        event_id=_optional_string(doc, "eventId"),
        tags=tags,
        pr_id=_optional_string(doc, "prId"),
        creation_time=None if creation is None else parse_time(creation, "creationTime"),
    )


def decode(
    raw: bytes, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES, default_time: int | None = None
) -> Event:
    """Bytes from the wire to a valid Event, or InvalidEvent with the reason."""
    if len(raw) > max_bytes:
        raise InvalidEvent(f"event is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}") from None
    return validate(doc, default_time=default_time)

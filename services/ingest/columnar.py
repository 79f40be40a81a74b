"""The fast path for batched messages of plain events: one Arrow JSON parse per app and batch.

Most of ingest's traffic is newline-delimited batches of ordinary user → item events (no
properties, no `$set`). Validating them one `dict` at a time cost ~5 µs an event, and turning them
back into columns for the event log another ~3 µs. Here the messages are parsed by Arrow's JSON
reader against an explicit schema and checked with vectorised compute functions; the result is
their rows in the event log's schema.

The fast path only accepts; it never rejects. A line it does not handle exactly as
`crossrec.core.events.validate` would (one with properties, special or reserved names, a time not
in the strict form below, a null or empty required field…) is left to the per-event path, which
accepts it or explains why not; so is every line of the call when Arrow cannot read them all the
same way orjson would (an unknown or repeated field, a wrong type, bad UTF-8, a blank or oversized
line): then `plain_events` returns None. A property-based test checks that both paths agree. All
of a batch's messages for one app are parsed at once: Arrow's cost per call is ~1 ms.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from crossrec.adapters.eventlog import SCHEMA as LOG_SCHEMA

_S = pa.string()
WIRE_SCHEMA = pa.schema(
    [
        ("eventId", _S),
        ("event", _S),
        ("entityType", _S),
        ("entityId", _S),
        ("targetEntityType", _S),
        ("targetEntityId", _S),
        ("eventTime", _S),
        ("tags", pa.list_(_S)),
        ("prId", _S),
        ("creationTime", _S),
    ]
)
_PARSE = pajson.ParseOptions(explicit_schema=WIRE_SCHEMA, unexpected_field_behavior="error")
# The one time form taken here (others go per event): both parsers read it identically.
_TIME = (
    r"^\d{4}-(0[1-9]|1[0-2])-\d{2}T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,3})?"
    r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
_MS_UTC = pa.timestamp("ms", tz="UTC")
_YEAR_ONE_MS = -62_135_596_800_000  # Python's datetime starts at year 1; Arrow accepts year 0
_RESERVED = ("$", "pio_")


@dataclass(frozen=True, slots=True)
class Batched:
    """One newline-delimited message: its bytes and where it came from."""

    value: bytes
    partition: int
    offset: int
    timestamp_ms: int  # the default eventTime and creationTime


@dataclass(slots=True)
class Plain:
    """What the fast path made of some messages."""

    rows: pa.Table  # the lines it took, as event-log rows, in message order
    others: list[tuple[int, int]]  # (message, line) of the lines the per-event path must take


def _non_empty(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.fill_null(pc.greater(pc.utf8_length(column), 0), False)


def _reserved(column: pa.ChunkedArray) -> pa.ChunkedArray:
    hits = [pc.fill_null(pc.starts_with(column, prefix), False) for prefix in _RESERVED]
    return pc.or_(*hits)


def _strict_time(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.fill_null(pc.match_substring_regex(column, _TIME), True)  # absent is fine


def _times(column: pa.ChunkedArray, defaults: pa.Array) -> pa.Array | None:
    """Epoch-ms timestamps, the default where absent; None for a date that does not exist (as
    2011-02-30) or before year 1."""
    try:
        parsed = pc.cast(column, _MS_UTC)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if parsed.null_count < len(parsed) and pc.min(parsed).value < _YEAR_ONE_MS:
        return None
    return pc.coalesce(parsed, defaults).combine_chunks()


def _parse(value: bytes, lines: int, max_event_bytes: int) -> pa.Table | None:
    """The wire columns of `lines` JSON lines, or None for anything Arrow and orjson might read
    differently (a blank or oversized line, bad UTF-8, a repeated or unknown field, a type)."""
    data = np.frombuffer(value, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    lengths = np.diff(np.concatenate(([-1], ends, [len(value)]))) - 1
    if len(lengths) != lines or lengths.min() <= 0 or lengths.max() > max_event_bytes:
        return None
    # Every line an object, `{` to `}`: a lone `null` crashes pyarrow 26's JSON reader.
    first, last = np.concatenate(([0], ends + 1)), np.concatenate((ends - 1, [len(value) - 1]))
    if not (np.all(data[first] == 0x7B) and np.all(data[last] == 0x7D)):
        return None
    try:
        read = pajson.ReadOptions(block_size=len(value) + 1, use_threads=False)
        wire = pajson.read_json(io.BytesIO(value), read_options=read, parse_options=_PARSE)
        wire.validate(full=True)  # UTF-8
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return wire if wire.num_rows == lines else None  # else a line held no object, or two


def _checked(wire: pa.Table) -> pa.ChunkedArray:
    """Per row: does PIO accept it as a plain event (no special or reserved names, required
    fields present and non-empty, both target fields or neither, times in the strict form)?"""
    target_kind, target_id = wire["targetEntityType"], wire["targetEntityId"]
    no_target = pc.and_(pc.is_null(target_kind), pc.is_null(target_id))
    target = pc.and_(_non_empty(target_kind), _non_empty(target_id))
    checks = [
        _non_empty(wire["event"]),
        _non_empty(wire["entityType"]),
        _non_empty(wire["entityId"]),
        pc.invert(_reserved(wire["event"])),
        pc.invert(_reserved(wire["entityType"])),
        pc.invert(_reserved(target_kind)),
        pc.or_(no_target, target),
        _strict_time(wire["eventTime"]),
        _strict_time(wire["creationTime"]),
    ]
    ok = checks[0]
    for check in checks[1:]:
        ok = pc.and_(ok, check)
    return ok


def plain_events(messages: Sequence[Batched], max_event_bytes: int) -> Plain | None:
    """Take the messages' plain events; None when Arrow cannot read the lines it was given as
    orjson would (then try the messages one by one, or event by event)."""
    lines, where, others = [], [], []
    for k, message in enumerate(messages):
        for i, line in enumerate(message.value.split(b"\n")):
            if b'"properties":' in line:  # item properties and the like: per event
                others.append((k, i))
            else:
                lines.append(line)
                where.append((k, i))
    if not lines:
        return Plain(LOG_SCHEMA.empty_table(), others)
    wire = _parse(b"\n".join(lines), len(lines), max_event_bytes)
    if wire is None or pc.list_flatten(wire["tags"]).null_count:
        return None
    ok = _checked(wire)
    if not pc.all(ok).as_py():
        taken = ok.to_numpy(zero_copy_only=False)
        others = sorted(others + [w for w, t in zip(where, taken.tolist(), strict=True) if not t])
        where = [w for w, t in zip(where, taken.tolist(), strict=True) if t]
        wire = wire.filter(ok)
        if not wire.num_rows:
            return Plain(LOG_SCHEMA.empty_table(), others)
    message_of = np.array([k for k, _ in where], dtype=np.int64)
    defaults = pa.array(np.array([m.timestamp_ms for m in messages])[message_of], _MS_UTC)
    event_time = _times(wire["eventTime"], defaults)
    creation_time = _times(wire["creationTime"], defaults)
    if event_time is None or creation_time is None:
        return None
    partition = np.array([m.partition for m in messages], dtype=np.int32)[message_of]
    offset = np.array([m.offset for m in messages], dtype=np.int64)[message_of]
    index = np.array([i for _, i in where], dtype=np.int32)
    return Plain(_rows(wire, event_time, creation_time, partition, offset, index), others)


def _rows(
    wire: pa.Table,
    event_time: pa.Array,
    creation_time: pa.Array,
    partition: np.ndarray,
    offset: np.ndarray,
    index: np.ndarray,
) -> pa.Table:
    """Wire columns as event-log rows, with the per-event path's defaults."""
    n = wire.num_rows
    coordinates = [pa.array(partition), pa.array(offset), pa.array(index)]
    event_id = wire["eventId"]
    if event_id.null_count:  # PIO-style ids from the Kafka coordinates, as the per-event path
        text = [pc.cast(column, _S) for column in coordinates]
        generated = pc.binary_join_element_wise("p", text[0], "o", text[1], "i", text[2], "")
        event_id = pc.coalesce(event_id, generated)
    tags = wire["tags"]
    empty_tags = pc.fill_null(pc.equal(pc.list_value_length(tags), 0), True)
    columns = {
        "event_id": event_id,
        "event": wire["event"],
        "entity_type": wire["entityType"],
        "entity_id": wire["entityId"],
        "target_entity_type": wire["targetEntityType"],
        "target_entity_id": wire["targetEntityId"],
        "properties": pa.nulls(n, _S),
        "event_time": event_time,
        "tags": pc.if_else(empty_tags, pa.nulls(n, tags.type), tags),
        "pr_id": wire["prId"],
        "creation_time": creation_time,
        "partition": coordinates[0],
        "offset": coordinates[1],
        "index": coordinates[2],
    }
    return pa.table({k: _chunk(v) for k, v in columns.items()}, schema=LOG_SCHEMA)


def _chunk(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
